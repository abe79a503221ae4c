/**
 * ICAP adapter benchmark (not a test): `npx tsx bench/icap.ts`
 *
 * Starts a real clamd (test/support/clamd.ts: generated signature database) and a real c-icap with
 * virus_scan and its clamd module in the configuration docs/icap.md documents
 * (test/support/c-icap.ts), writes 20 KB messages to files, and measures messages/s and latency:
 *   - through IcapScanner to c-icap's avscan service in its defaults (RESPMOD, no preview,
 *     kept-alive connections), with the preview c-icap offers, and with keepAlive 0 (a new
 *     connection per message);
 *   - through ClamdScanner to the same clamd (INSTREAM), for comparison;
 * each at concurrency 1 and 8, in four interleaved rounds. Prints a table and writes
 * bench/results/icap.json with the load average before and after. BENCH_SECONDS (default 2) per row.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { clamdSchema } from '../src/config/clamd.js';
import { icapSchema } from '../src/config/icap.js';
import { silentLogger } from '../src/core/logger.js';
import type { Finding } from '../src/core/outcome.js';
import type { Scanner, ScanContext } from '../src/core/scanner.js';
import { FileMessage } from '../src/mime/spool.js';
import { ClamdScanner } from '../src/sandbox/clamd/scanner.js';
import { IcapScanner } from '../src/sandbox/icap/scanner.js';
import { startCIcap } from '../test/support/c-icap.js';
import { startClamd } from '../test/support/clamd.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
/** Each row's SECONDS are spread over this many interleaved rounds. */
const ROUNDS = 4;
const FILES = 200;
const SIZE = 20 * 1024;

interface Row {
  readonly what: string;
  readonly concurrency: number;
  readonly messages: number;
  readonly seconds: number;
  readonly perSecond: number;
  readonly p50ms: number;
  readonly p99ms: number;
}

function mail(i: number): string {
  const text = `Hello,\r\n\r\nthe report number ${i} is attached.\r\n\r\nRegards\r\n`;
  const attachment = randomBytes(Math.floor((SIZE - 1200) * 0.74))
    .toString('base64')
    .replace(/.{1,76}/g, '$&\r\n');
  return (
    `From: sender${i}@example.test\r\nTo: rcpt@example.test\r\nSubject: report ${i}\r\n` +
    `Message-ID: <bench-${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b${i}"\r\n\r\n` +
    `--b${i}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n` +
    `--b${i}\r\nContent-Type: application/octet-stream; name="report-${i}.bin"\r\n` +
    `Content-Disposition: attachment; filename="report-${i}.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n${attachment}` +
    `--b${i}--\r\n`
  );
}

function ctx(): ScanContext {
  return {
    signal: new AbortController().signal,
    deadline: Date.now() + 60_000,
    log: silentLogger,
    memo: { run: (_k: string, compute: () => Promise<Finding>) => compute() },
    now: Date.now,
  };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

interface Sample {
  latencies: number[];
  seconds: number;
}

/** Runs `scanner` at `concurrency` for `seconds` and adds what it measured to `sample`. */
async function measure(
  what: string,
  scanner: Scanner,
  messages: readonly FileMessage[],
  concurrency: number,
  seconds: number,
  sample: Sample,
): Promise<void> {
  let next = 0;
  const stopAt = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < stopAt) {
        const m = messages[next++ % messages.length] as FileMessage;
        const s = performance.now();
        const f = await scanner.scan(m, ctx());
        sample.latencies.push(performance.now() - s);
        if (f.kind !== 'clean') throw new Error(`${what}: unexpected ${JSON.stringify(f)}`);
      }
    }),
  );
  sample.seconds += (performance.now() - t0) / 1000;
}

function toRow(what: string, concurrency: number, sample: Sample): Row {
  const latencies = [...sample.latencies].sort((a, b) => a - b);
  return {
    what,
    concurrency,
    messages: latencies.length,
    seconds: sample.seconds,
    perSecond: latencies.length / sample.seconds,
    p50ms: pct(latencies, 50),
    p99ms: pct(latencies, 99),
  };
}

async function main(): Promise<void> {
  const loadBefore = loadavg();
  const clamd = await startClamd({ maxThreads: 8 });
  const cicap = await startCIcap({ clamdPort: clamd.port, profile: 'documented' });
  const dir = mkdtempSync(join(tmpdir(), 'sandgate-bench-icap-'));
  const rows: Row[] = [];
  try {
    const files = Array.from({ length: FILES }, (_, i) => {
      const p = join(dir, `m${i}.eml`);
      writeFileSync(p, mail(i));
      return p;
    });
    const adapters: Array<[string, () => Scanner]> = [
      [
        'IcapScanner -> c-icap avscan -> clamd, defaults',
        () => new IcapScanner({ config: icapSchema.parse({ servers: [cicap.url()], healthInterval: 0 }) }),
      ],
      [
        'IcapScanner, preview on (c-icap: 1024 bytes)',
        () =>
          new IcapScanner({
            config: icapSchema.parse({ servers: [cicap.url()], healthInterval: 0, preview: true }),
          }),
      ],
      [
        'IcapScanner, a new connection per message',
        () =>
          new IcapScanner({
            config: icapSchema.parse({ servers: [cicap.url()], healthInterval: 0, keepAlive: 0 }),
          }),
      ],
      [
        'ClamdScanner -> the same clamd (INSTREAM, TCP)',
        () =>
          new ClamdScanner({
            config: clamdSchema.parse({ addresses: [clamd.tcpAddress], healthInterval: '10s' }),
          }),
      ],
    ];
    const messages = files.map(
      (f, i) =>
        new FileMessage(`b${i}`, { sender: '', recipients: ['rcpt@example.test'], frontEnd: 'cli' }, f),
    );
    const scanners = adapters.map(([label, make]) => [label, make()] as const);
    // Warm-up: every adapter, then the rows in ROUNDS interleaved rounds (A B C D, A B C D, ...),
    // so drift on the shared machine (and the first row's penalty) falls on every row alike.
    for (const [label, s] of scanners)
      await measure(label, s, messages, 8, 0.5, { latencies: [], seconds: 0 });
    const samples = new Map<string, Sample>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, s] of scanners) {
        for (const c of [1, 8]) {
          const key = `${label}\0${c}`;
          const sample = samples.get(key) ?? { latencies: [], seconds: 0 };
          samples.set(key, sample);
          await measure(label, s, messages, c, SECONDS / ROUNDS, sample);
        }
      }
    }
    for (const [label, s] of scanners) {
      for (const c of [1, 8]) rows.push(toRow(label, c, samples.get(`${label}\0${c}`) as Sample));
      await s.close?.();
    }
  } finally {
    await cicap.close();
    await clamd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();

  const fmt = (n: number, d = 1): string => n.toFixed(d);
  const header = ['what', 'conc', 'messages', 'seconds', 'msg/s', 'p50 ms', 'p99 ms'];
  const table = rows.map((r) => [
    r.what,
    String(r.concurrency),
    String(r.messages),
    fmt(r.seconds, 2),
    fmt(r.perSecond, 0),
    fmt(r.p50ms, 2),
    fmt(r.p99ms, 2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => (t[i] as string).length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const t of table) console.log(line(t));
  console.log(
    `load average (1m) before ${fmt(loadBefore[0] ?? 0, 2)}, after ${fmt(loadAfter[0] ?? 0, 2)}; ${cpus().length} CPUs`,
  );

  mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
  writeFileSync(
    join(import.meta.dirname, 'results', 'icap.json'),
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        cpu: cpus()[0]?.model,
        /** Other work on the machine skews the numbers: the 1-minute load average before and after. */
        loadavg1mBefore: loadBefore[0],
        loadavg1mAfter: loadAfter[0],
        messageBytes: SIZE,
        files: FILES,
        secondsPerRow: SECONDS,
        rows,
      },
      null,
      2,
    )}\n`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
