/**
 * PT Sandbox adapter benchmark (not a test): `npx tsx bench/pt-sandbox.ts`
 *
 * 1. Throughput and added latency of the adapter (content key, upload with Content-Length,
 *    createScanTask, checkTask, pt_task rows) against the zero-latency fake, 20 KB messages.
 * 2. Tasks created in attachments mode for a corpus where 30% of attachments repeat.
 *
 * Prints a table and writes bench/results/pt-sandbox.json.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { analyseMessage } from '../src/core/content-key.js';
import { startFakePtSandbox } from '../test/fakes/fake-pt-sandbox.js';
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
    maxInflight: CONCURRENCY,
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
  state.close();
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
    maxInflight: CONCURRENCY,
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
  state.close();
  return result;
}

const tp = await throughput();
const dd = await dedupe();
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
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/pt-sandbox.json', import.meta.url),
  `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: cpus().length, throughput: tp, dedupe: dd }, null, 2)}\n`,
);
