/**
 * PT Sandbox adapter benchmark (not a test): `npm run build && npx tsx bench/pt-sandbox.ts`
 *
 * 1. Throughput and added latency of the adapter (content key, upload with Content-Length,
 *    createScanTask, checkTask, pt_task rows) against the zero-latency fake, 20 KB messages.
 * 2. Tasks created in attachments mode for a corpus where 30% of attachments repeat.
 * 3. Bursts at default settings through the real `sandgate helper` process: 200 pipelined FILE
 *    requests, each task taking 2 s on the appliance, no errors. Time to the last answer and
 *    tempfails (REJECTED), with an appliance that runs every task at once (goal: all answered
 *    within 15 s, none tempfailed) and with one of 8 analysis slots (its capacity is 4 tasks/s, so
 *    200 tasks take 50 s: what is answered, what is tempfailed, and where the in-flight count
 *    settles).
 *
 * Prints a table and writes bench/results/pt-sandbox.json. BENCH_SKIP_BURST=1 skips part 3.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { analyseMessage } from '../src/core/content-key.js';
import { FAKE_PT_TOKEN, startFakePtSandbox } from '../test/fakes/fake-pt-sandbox.js';
import { CgpBase, CgpHelper, MAIN_JS } from '../test/support/cgp.js';
import { directContext, MemoHarness } from '../test/support/memo-harness.js';
import {
  mailWithAttachment,
  makeScanner,
  message,
  openTestState,
  simpleMail,
  testConfig,
} from '../test/support/pt-sandbox.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const CORPUS = Number(process.env.BENCH_CORPUS ?? 500);
const SIZE = 20 * 1024;

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function throughput() {
  const sb = await startFakePtSandbox({ taskDurationMs: 0 });
  const state = openTestState();
  const cfg = testConfig(sb.url, {
    inflight: { max: CONCURRENCY, start: CONCURRENCY, min: 1 },
    polling: { firstDelay: '0ms', interval: '2ms', slowAfter: '10s', slowInterval: '10ms' },
  });
  const scanner = makeScanner(cfg, state);
  const msgs = Array.from({ length: MESSAGES }, (_, i) =>
    message(simpleMail(`${i} ${randomBytes(SIZE / 2 - 200).toString('hex')}`, { subject: `bench ${i}` })),
  );
  // Warm up the connection pool and the JIT.
  await Promise.all(
    msgs.slice(0, 50).map((m) => scanner.scan(m, directContext({ deadline: Date.now() + 60_000 }))),
  );
  const latencies: number[] = [];
  let next = 50;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = next++;
        const m = msgs[i];
        if (m === undefined) return;
        const s = performance.now();
        const f = await scanner.scan(m, directContext({ deadline: Date.now() + 60_000 }));
        latencies.push(performance.now() - s);
        if (f.kind !== 'clean') throw new Error(`unexpected finding ${JSON.stringify(f)}`);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await scanner.close();
  await sb.close();
  await state.close();
  latencies.sort((a, b) => a - b);
  const n = latencies.length;
  return {
    messages: n,
    bytesEach: msgs[0]!.size,
    concurrency: CONCURRENCY,
    msgsPerSec: Math.round(n / seconds),
    p50Ms: Number(pct(latencies, 50).toFixed(2)),
    p99Ms: Number(pct(latencies, 99).toFixed(2)),
  };
}

async function dedupe() {
  const sb = await startFakePtSandbox({ taskDurationMs: 0 });
  const state = openTestState();
  const cfg = testConfig(sb.url, {
    granularity: 'attachments',
    inflight: { max: CONCURRENCY, start: CONCURRENCY, min: 1 },
    polling: { firstDelay: '0ms', interval: '2ms', slowAfter: '10s', slowInterval: '10ms' },
  });
  const scanner = makeScanner(cfg, state);
  const harness = new MemoHarness();
  // 70% fresh attachments; 30% repeat one seen before.
  const pool: Buffer[] = [];
  const attachments: Buffer[] = [];
  for (let i = 0; i < CORPUS; i++) {
    const repeat = pool.length > 0 && (i * 7919) % 100 < 30;
    const a = repeat
      ? pool[(i * 104729) % pool.length]!
      : Buffer.concat([Buffer.from('%PDF-1.4\n'), randomBytes(8 * 1024)]);
    if (!repeat) pool.push(a);
    attachments.push(a);
  }
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = next++;
        const a = attachments[i];
        if (a === undefined) return;
        const m = message(
          mailWithAttachment({
            headers: [`X-Seq: ${i}`],
            filename: `doc${i}.pdf`,
            contentType: 'application/pdf',
            content: a,
          }),
        );
        const { contentKey } = await analyseMessage(m);
        await harness.scan(scanner, m, contentKey, Date.now() + 60_000);
      }
    }),
  );
  const ms = performance.now() - t0;
  await harness.settle();
  const result = {
    messages: CORPUS,
    distinctAttachments: pool.length,
    repeatedShare: Number(((CORPUS - pool.length) / CORPUS).toFixed(2)),
    tasksCreated: sb.tasksCreated(),
    uploads: sb.uploads.length,
    msgsPerSec: Math.round((CORPUS / ms) * 1000),
  };
  await scanner.close();
  await sb.close();
  await state.close();
  return result;
}

interface BurstResult {
  readonly slots: number | 'unlimited';
  readonly requests: number;
  readonly lastAnswerSec: number;
  readonly delivered: number;
  readonly tempfailed: number;
  readonly tasks: number;
  readonly getVersionCalls: number;
  readonly checkTaskCalls: number;
  /** Tasks at the appliance (running + queued), median over the second half of the burst. */
  readonly settledInFlight: number | undefined;
  readonly maxQueued: number;
}

function burstMail(i: number): string {
  return [
    `From: sender${i}@example.org`,
    'To: rcpt@example.net',
    `Subject: report ${i}`,
    `Message-ID: <burst-${i}@example.org>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    randomBytes(14_000).toString('base64').replace(/.{76}/g, '$&\n'),
    '',
  ].join('\n');
}

/** 200 pipelined FILE requests to the real helper process, default settings, 2 s tasks. */
async function burst(slots: number | undefined): Promise<BurstResult> {
  const requests = 200;
  const sb = await startFakePtSandbox({ taskDurationMs: 2000, ...(slots !== undefined ? { slots } : {}) });
  const base = new CgpBase('sg-bench-burst-');
  try {
    const tokenFile = join(base.dir, 'pt.token');
    writeFileSync(tokenFile, FAKE_PT_TOKEN);
    const files = Array.from({ length: requests }, (_, i) =>
      base.queueFile(`Queue/${i % 64}/b${i}.msg`, { body: burstMail(i) }),
    );
    const h = CgpHelper.start({
      base,
      config: {
        stateDir: join(base.dir, 'state'),
        scan: { chain: ['pt-sandbox'] },
        scanners: { ptSandbox: { url: sb.url, tokenFile } },
      },
    });
    await h.request('0', 'INTF 4');
    const samples: Array<{ t: number; n: number }> = [];
    const t0 = performance.now();
    const sampler = setInterval(() => {
      const l = sb.load();
      samples.push({
        t: performance.now() - t0,
        n: slots === undefined ? l.uncollected : l.running + l.queued,
      });
    }, 100);
    h.sendRaw(files.map((f, i) => `${i + 1} FILE ${f}\n`).join(''));
    await h.replyCount(requests + 1, 120_000);
    const lastAnswerSec = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    const replies = files.map((_, i) => h.replies.get(String(i + 1))?.[0] ?? '');
    const delivered = replies.filter((r) => / ADDHEADER /.test(r)).length;
    const tempfailed = replies.filter((r) => / REJECTED /.test(r)).length;
    if (delivered + tempfailed !== requests)
      throw new Error(`unexpected replies: ${replies.slice(0, 3).join(' | ')}`);
    await h.quit();
    const half = samples.filter((x) => x.t >= (lastAnswerSec * 1000) / 2).map((x) => x.n);
    return {
      slots: slots ?? 'unlimited',
      requests,
      lastAnswerSec: Number(lastAnswerSec.toFixed(2)),
      delivered,
      tempfailed,
      tasks: sb.tasksCreated(),
      getVersionCalls: sb.counters['maintenance/getVersion'] ?? 0,
      checkTaskCalls: sb.counters['analysis/checkTask'] ?? 0,
      settledInFlight:
        half.length > 0
          ? pct(
              [...half].sort((a, b) => a - b),
              50,
            )
          : undefined,
      maxQueued: sb.load().maxQueued,
    };
  } finally {
    await sb.close();
    base.remove();
  }
}

const tp = await throughput();
const dd = await dedupe();
const bursts: BurstResult[] = [];
if (process.env.BENCH_SKIP_BURST !== '1') {
  if (!existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} is missing: run npm run build first`);
  bursts.push(await burst(undefined), await burst(8));
}
const rows: [string, string][] = [
  ['messages (20 KB, message mode)', String(tp.messages)],
  ['concurrency', String(tp.concurrency)],
  ['messages/s', String(tp.msgsPerSec)],
  ['added latency p50 (ms)', String(tp.p50Ms)],
  ['added latency p99 (ms)', String(tp.p99Ms)],
  ['corpus messages (attachments mode)', String(dd.messages)],
  ['distinct attachments', `${dd.distinctAttachments} (${Math.round(dd.repeatedShare * 100)}% repeats)`],
  ['tasks created', String(dd.tasksCreated)],
  ['uploads', String(dd.uploads)],
];
console.log('PT Sandbox adapter vs zero-latency fake (npx tsx bench/pt-sandbox.ts)');
for (const [k, v] of rows) console.log(`  ${k.padEnd(38)}${v}`);
if (bursts.length > 0) {
  console.log('');
  console.log('Bursts: 200 pipelined FILE requests, helper process, default settings, 2 s tasks');
  const header = [
    'appliance slots',
    'last answer s',
    'delivered',
    'tempfailed',
    'tasks',
    'getVersion',
    'checkTask',
    'in flight (2nd half, median)',
    'max queued',
  ];
  const body = bursts.map((b) => [
    String(b.slots),
    String(b.lastAnswerSec),
    String(b.delivered),
    String(b.tempfailed),
    String(b.tasks),
    String(b.getVersionCalls),
    String(b.checkTaskCalls),
    String(b.settledInFlight ?? '-'),
    String(b.maxQueued),
  ]);
  for (const row of [header, ...body]) console.log(`| ${row.join(' | ')} |`);
}
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/pt-sandbox.json', import.meta.url),
  `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: cpus().length, throughput: tp, dedupe: dd, bursts }, null, 2)}\n`,
);
