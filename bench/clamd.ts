/**
 * clamd adapter benchmark (not a test): `npx tsx bench/clamd.ts`
 *
 * Starts a real clamd (test/support/clamd.ts: generated signature database, 127.0.0.1 TCP and a
 * unix socket), writes 20 KB messages to files, and measures messages/s:
 *   - through ClamdScanner (INSTREAM, fresh connection per scan) at concurrency 1 and 8,
 *     granularity message and parts, over TCP and the unix socket;
 *   - `clamdscan --stream` on the same files in the same run: one process for all files, and one
 *     process per message (what a naive integration spawns) at concurrency 1 and 8;
 *   - the embedded rules scanner on the same messages, for the chain costs in docs/clamd.md.
 * Prints a table and writes bench/results/clamd.json. BENCH_SECONDS (default 2) per adapter row.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { clamdSchema } from '../src/config/clamd.js';
import { rulesSchema } from '../src/config/scanners.js';
import { silentLogger } from '../src/core/logger.js';
import type { Finding } from '../src/core/outcome.js';
import type { Scanner, ScanContext } from '../src/core/scanner.js';
import { FileMessage } from '../src/mime/spool.js';
import { ClamdScanner } from '../src/sandbox/clamd/scanner.js';
import { RulesScanner } from '../src/sandbox/rules/rules-scanner.js';
import { findClamdscan, startClamd } from '../test/support/clamd.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const FILES = 200;
const SIZE = 20 * 1024;

interface Row {
  readonly what: string;
  readonly concurrency: number;
  readonly messages: number;
  readonly seconds: number;
  readonly perSecond: number;
  readonly p50ms?: number;
  readonly p99ms?: number;
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

async function adapterRow(
  what: string,
  scanner: Scanner,
  files: string[],
  concurrency: number,
): Promise<Row> {
  const messages = files.map(
    (f, i) => new FileMessage(`b${i}`, { sender: '', recipients: ['rcpt@example.test'], frontEnd: 'cli' }, f),
  );
  for (const m of messages.slice(0, 20)) await scanner.scan(m, ctx()); // warm-up
  const latencies: number[] = [];
  let next = 0;
  const stopAt = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < stopAt) {
        const m = messages[next++ % messages.length] as FileMessage;
        const s = performance.now();
        const f = await scanner.scan(m, ctx());
        latencies.push(performance.now() - s);
        if (f.kind !== 'clean') throw new Error(`${what}: unexpected ${JSON.stringify(f)}`);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    what,
    concurrency,
    messages: latencies.length,
    seconds,
    perSecond: latencies.length / seconds,
    p50ms: pct(latencies, 50),
    p99ms: pct(latencies, 99),
  };
}

function run(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? -1));
  });
}

async function clamdscanRows(bin: string, conf: string, files: string[]): Promise<Row[]> {
  const rows: Row[] = [];
  const base = [`--config-file=${conf}`, '--stream', '--no-summary', '--quiet'];
  let t0 = performance.now();
  const code = await run(bin, [...base, ...files]);
  if (code !== 0) throw new Error(`clamdscan exited ${code}`);
  let seconds = (performance.now() - t0) / 1000;
  rows.push({
    what: 'clamdscan --stream, one process, all files',
    concurrency: 1,
    messages: files.length,
    seconds,
    perSecond: files.length / seconds,
  });
  for (const concurrency of [1, 8]) {
    const subset = files.slice(0, 80);
    let next = 0;
    t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (;;) {
          const f = subset[next++];
          if (f === undefined) return;
          const c = await run(bin, [...base, f]);
          if (c !== 0) throw new Error(`clamdscan exited ${c}`);
        }
      }),
    );
    seconds = (performance.now() - t0) / 1000;
    rows.push({
      what: 'clamdscan --stream, one process per message',
      concurrency,
      messages: subset.length,
      seconds,
      perSecond: subset.length / seconds,
    });
  }
  return rows;
}

async function main(): Promise<void> {
  const clamd = await startClamd({ maxThreads: 8 });
  const dir = mkdtempSync(join(tmpdir(), 'sandgate-bench-clamd-'));
  const rows: Row[] = [];
  try {
    const files = Array.from({ length: FILES }, (_, i) => {
      const p = join(dir, `m${i}.eml`);
      writeFileSync(p, mail(i));
      return p;
    });
    const walk = {
      spoolDir: join(dir, 'parts'),
      limits: {
        maxDepth: 8,
        maxParts: 1000,
        maxArchiveMembers: 1000,
        maxExpansionRatio: 100,
        ratioMinBytes: 1 << 20,
        maxTotalBytes: 1 << 29,
      },
    };
    const make = (address: string, granularity: 'message' | 'parts'): ClamdScanner =>
      new ClamdScanner({
        config: clamdSchema.parse({ addresses: [address], granularity, healthInterval: '10s' }),
        walk,
      });
    for (const [label, address, granularity] of [
      ['ClamdScanner message, TCP', clamd.tcpAddress, 'message'],
      ['ClamdScanner message, unix socket', clamd.socketPath, 'message'],
      ['ClamdScanner parts, TCP', clamd.tcpAddress, 'parts'],
    ] as const) {
      const s = make(address, granularity);
      for (const c of [1, 8]) rows.push(await adapterRow(label, s, files, c));
      await s.close();
    }
    const bin = findClamdscan();
    if (bin === undefined) console.error('clamdscan not installed: skipping its rows');
    else rows.push(...(await clamdscanRows(bin, clamd.clamdscanConfPath, files)));
    const rules = new RulesScanner(rulesSchema.parse({}), { spoolDir: join(dir, 'rules') });
    for (const c of [1, 8]) rows.push(await adapterRow('rules (embedded, for the chain)', rules, files, c));
  } finally {
    await clamd.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  const fmt = (n: number | undefined, d = 1): string => (n === undefined ? '-' : n.toFixed(d));
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

  mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
  writeFileSync(
    join(import.meta.dirname, 'results', 'clamd.json'),
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        cpu: cpus()[0]?.model,
        /** Other work on the machine skews the numbers: the 1-minute load average at the end. */
        loadavg1m: loadavg()[0],
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
