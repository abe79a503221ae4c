/**
 * CommuniGate helper benchmark (not a test): `npm run build && npx tsx bench/helper.ts`
 *
 *   1. Time from spawning `sandgate helper` to its INTF answer (CommuniGate restarts helpers):
 *      median and worst of several starts. Target < 300 ms.
 *   2. FILE requests/s through the real helper process with the rules scanner on distinct 20 KB
 *      queue files (all pipelined), against the same evaluator called in one process with the
 *      same files (target: the helper reaches >= 80 % of it).
 *   3. 200 pipelined FILE requests against the fake PT Sandbox with 2 s tasks, polling from 0.5 s
 *      every 0.5 s, in-flight window 256: all answered in < 4 s (serially: 400 s). The same burst at
 *      default settings is in bench/pt-sandbox.ts.
 *
 * Prints a table and writes bench/results/helper.json.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/cli/load-config.js';
import { createRuntime } from '../src/cli/runtime.js';
import { silentLogger } from '../src/core/logger.js';
import { FileMessage } from '../src/mime/spool.js';
import { readQueueFile } from '../src/helper/envelope.js';
import { defaultVerdict, FAKE_PT_TOKEN, startFakePtSandbox } from '../test/fakes/fake-pt-sandbox.js';
import { CgpBase, CgpHelper, MAIN_JS } from '../test/support/cgp.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const SIZE = 20 * 1024;
const FILES = Number(process.env.BENCH_FILES ?? 600);
const STARTS = 7;
const SANDBOX_REQUESTS = 200;

interface Row {
  readonly what: string;
  readonly value: number;
  readonly unit: string;
  readonly target?: string;
  readonly ok?: boolean;
}

function mail(i: number): string {
  const text = `Hello,\r\n\r\nthe report number ${i} is attached.\r\n`;
  const attachment = randomBytes(Math.floor((SIZE - 1200) * 0.74))
    .toString('base64')
    .replace(/.{1,76}/g, '$&\r\n');
  return (
    `From: sender${i}@example.test\r\nTo: rcpt@example.test\r\nSubject: report ${i}\r\n` +
    `Message-ID: <bench-${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b${i}"\r\n\r\n` +
    `--b${i}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n` +
    `--b${i}\r\nContent-Type: application/pdf; name="report-${i}.pdf"\r\n` +
    `Content-Disposition: attachment; filename="report-${i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${attachment}` +
    `--b${i}--\r\n`
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function spawnToIntf(base: CgpBase): Promise<number[]> {
  const cfg = base.config('start.yaml', {
    stateDir: join(base.dir, 'state-start'),
    scan: { chain: ['rules'] },
  });
  const times: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const t0 = performance.now();
    const h = CgpHelper.start({ base, config: cfg });
    h.send('1 INTF 4');
    await h.reply('1');
    const i1 = h.lines.findIndex((l) => l.startsWith('1 INTF'));
    times.push((h.times[i1] ?? performance.now()) - t0);
    await h.quit();
  }
  return times;
}

async function helperThroughput(base: CgpBase, files: string[], stateDir: string): Promise<number> {
  const h = CgpHelper.start({
    base,
    config: { stateDir: join(base.dir, stateDir), scan: { chain: ['rules'] }, helper: { concurrency: 64 } },
  });
  await h.request('0', 'INTF 4');
  const t0 = performance.now();
  h.sendRaw(files.map((f, i) => `${i + 1} FILE ${f}\n`).join(''));
  await h.replyCount(files.length + 1, 120_000);
  const seconds = (performance.now() - t0) / 1000;
  const bad = [...h.replies.values()].filter((r) => !/^\d+ (ADDHEADER|INTF)/.test(r[0] ?? ''));
  if (bad.length > 0) throw new Error(`unexpected replies: ${bad.slice(0, 3).join(' | ')}`);
  await h.quit();
  return files.length / seconds;
}

async function coreThroughput(base: CgpBase, files: string[], stateDir: string): Promise<number> {
  const { config } = loadConfig({
    env: {},
    cwd: base.dir,
    sets: [`stateDir=${join(base.dir, stateDir)}`, 'scan.chain=rules'],
  });
  const rt = await createRuntime(config, { log: silentLogger, frontEnd: 'helper' });
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const rel = files[next++] as string;
      const abs = join(base.dir, rel);
      const qf = await readQueueFile(abs);
      await rt.evaluator.evaluate(
        new FileMessage(`sg-bench-${next}`, qf.envelope, abs, qf.bodyOffset, qf.size),
        {
          deadline: Date.now() + 60_000,
        },
      );
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  const seconds = (performance.now() - t0) / 1000;
  await rt.close();
  return files.length / seconds;
}

async function sandboxFanOut(base: CgpBase): Promise<{ seconds: number; tasks: number }> {
  const sandbox = await startFakePtSandbox({ taskDurationMs: 2000, verdictFor: (b) => defaultVerdict(b) });
  try {
    const tokenFile = join(base.dir, 'pt.token');
    writeFileSync(tokenFile, FAKE_PT_TOKEN);
    const files = Array.from({ length: SANDBOX_REQUESTS }, (_, i) =>
      base.queueFile(`Queue/${i % 64}/sb${i}.msg`, { body: mail(100_000 + i) }),
    );
    const h = CgpHelper.start({
      base,
      config: {
        stateDir: join(base.dir, 'state-sandbox'),
        scan: { chain: ['pt-sandbox'], concurrency: 256 },
        scanners: {
          ptSandbox: {
            url: sandbox.url,
            tokenFile,
            inflight: { max: 256, start: 256 },
            polling: { firstDelay: '500ms', interval: '500ms' },
          },
        },
        helper: { concurrency: 256, deadline: '30s' },
      },
    });
    await h.request('0', 'INTF 4');
    const t0 = performance.now();
    h.sendRaw(files.map((f, i) => `${i + 1} FILE ${f}\n`).join(''));
    await h.replyCount(files.length + 1, 60_000);
    const seconds = (performance.now() - t0) / 1000;
    const bad = [...h.replies.values()].filter((r) => !/^\d+ (ADDHEADER|INTF)/.test(r[0] ?? ''));
    if (bad.length > 0) throw new Error(`unexpected replies: ${bad.slice(0, 3).join(' | ')}`);
    await h.quit();
    return { seconds, tasks: sandbox.tasksCreated() };
  } finally {
    await sandbox.close();
  }
}

async function main(): Promise<void> {
  if (!existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} is missing: run npm run build first`);
  const base = new CgpBase('sg-bench-helper-');
  const rows: Row[] = [];
  try {
    const starts = await spawnToIntf(base);
    rows.push({
      what: `spawn -> INTF answer, median of ${STARTS}`,
      value: Math.round(median(starts)),
      unit: 'ms',
      target: '< 300',
      ok: median(starts) < 300,
    });
    rows.push({
      what: `spawn -> INTF answer, worst of ${STARTS}`,
      value: Math.round(Math.max(...starts)),
      unit: 'ms',
    });

    const files = Array.from({ length: FILES }, (_, i) =>
      base.queueFile(`Queue/${i % 100}/${i}.msg`, { body: mail(i) }),
    );
    const core = await coreThroughput(base, files, 'state-core');
    const helper = await helperThroughput(base, files, 'state-helper');
    rows.push({
      what: `core in one process, rules, ${FILES} x 20 KB`,
      value: Math.round(core),
      unit: 'msg/s',
    });
    rows.push({
      what: `helper process, rules, ${FILES} x 20 KB pipelined`,
      value: Math.round(helper),
      unit: 'msg/s',
    });
    rows.push({
      what: 'helper / core',
      value: Math.round((helper / core) * 100),
      unit: '%',
      target: '>= 80',
      ok: helper / core >= 0.8,
    });

    const fan = await sandboxFanOut(base);
    rows.push({
      what: `${SANDBOX_REQUESTS} pipelined, fake sandbox 2 s tasks, poll 0.5 s`,
      value: Math.round(fan.seconds * 100) / 100,
      unit: 's',
      target: '< 4',
      ok: fan.seconds < 4,
    });
    rows.push({ what: 'sandbox tasks created', value: fan.tasks, unit: 'tasks' });
  } finally {
    base.remove();
  }

  const w = Math.max(...rows.map((r) => r.what.length));
  console.log(`${'case'.padEnd(w)}  ${'value'.padStart(8)}  unit    target  ok`);
  for (const r of rows) {
    console.log(
      `${r.what.padEnd(w)}  ${String(r.value).padStart(8)}  ${r.unit.padEnd(6)}  ${(r.target ?? '').padEnd(6)}  ${r.ok === undefined ? '' : r.ok ? 'yes' : 'NO'}`,
    );
  }
  mkdirSync(join(HERE, 'results'), { recursive: true });
  writeFileSync(
    join(HERE, 'results', 'helper.json'),
    JSON.stringify(
      { bench: 'helper', node: process.version, date: new Date().toISOString(), rows },
      null,
      2,
    ) + '\n',
  );
}

await main();
