/**
 * Benchmark of the embedded rules scanner over the streaming MIME walker (no verdict cache).
 * Run: npx tsx bench/rules-core.ts   (writes bench/results/rules-core.json)
 * The 100 MB cases run in child processes so each reports its own peak RSS.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rulesSchema } from '../src/config/scanners.js';
import type { MessageSource } from '../src/core/message.js';
import type { ScanContext } from '../src/core/scanner.js';
import { RulesScanner } from '../src/sandbox/rules/rules-scanner.js';
import { bundleForNode } from '../test/support/bundle.js';
import { bigMessage, buildMessage, docx, messageSource, zip } from '../test/support/specimens.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const MB = 1024 * 1024;

interface Row {
  readonly case: string;
  readonly messages: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly msgsPerSec: number;
  readonly mbPerSec: number;
  readonly cpuMsPerMsg: number;
  readonly peakRssMb: number;
  readonly verdicts: Record<string, number>;
}

const silent = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child: () => silent };
function context(): ScanContext {
  return {
    signal: new AbortController().signal,
    deadline: Date.now() + 600_000,
    log: silent,
    memo: { run: (_k, compute) => compute() },
    now: Date.now,
  };
}

/** Deterministic pseudo-random numbers (mulberry32), so every run scans the same corpus. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\r\n';
function textOf(bytes: number): string {
  return LINE.repeat(Math.max(1, Math.ceil(bytes / LINE.length)));
}
function noise(bytes: number, r: () => number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i + 4 <= bytes; i += 4) b.writeUInt32LE((r() * 4294967296) >>> 0, i);
  return b;
}

/** 1,000 messages, 5 KB to 2 MB: mostly 20 KB text, some with attachments. */
function mixedCorpus(): MessageSource[] {
  const r = rng(42);
  const out: MessageSource[] = [];
  for (let i = 0; i < 1000; i++) {
    const x = r();
    let msg: Buffer;
    if (x < 0.6) msg = buildMessage({ text: textOf(20_000) });
    else if (x < 0.75) msg = buildMessage({ text: textOf(5_000) });
    else if (x < 0.85)
      msg = buildMessage({
        text: textOf(8_000),
        attachments: [
          {
            filename: 'report.pdf',
            contentType: 'application/pdf',
            content: noise(30_000 + Math.floor(r() * 200_000), r),
          },
        ],
      });
    else if (x < 0.93)
      msg = buildMessage({
        text: textOf(4_000),
        attachments: [
          { filename: 'minutes.docx', content: docx() },
          {
            filename: 'data.zip',
            content: zip({ 'a.csv': Buffer.from(textOf(60_000)), 'b.bin': noise(20_000, r) }),
          },
        ],
      });
    else if (x < 0.98)
      msg = buildMessage({
        text: textOf(100_000 + Math.floor(r() * 400_000)),
        textEncoding: 'quoted-printable',
      });
    else
      msg = buildMessage({
        text: textOf(2_000),
        attachments: [{ filename: 'scan.tif', content: noise(1_400_000, r) }],
      });
    out.push(messageSource(msg, `m${i}`));
  }
  return out;
}

async function run(name: string, messages: readonly MessageSource[], scanner: RulesScanner): Promise<Row> {
  const verdicts: Record<string, number> = {};
  for (const m of messages) await scanner.scan(m, context()); // one untimed pass: JIT warm-up
  const bytes = messages.reduce((s, m) => s + m.size, 0);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (const m of messages) {
    const f = await scanner.scan(m, context());
    verdicts[f.kind] = (verdicts[f.kind] ?? 0) + 1;
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return {
    case: name,
    messages: messages.length,
    bytes,
    seconds: round(seconds, 3),
    msgsPerSec: round(messages.length / seconds, 0),
    mbPerSec: round(bytes / MB / seconds, 1),
    cpuMsPerMsg: round((cpu.user + cpu.system) / 1000 / messages.length, 3),
    peakRssMb: round(process.resourceUsage().maxRSS / 1024, 1),
    verdicts,
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function newScanner(spoolDir: string): RulesScanner {
  return new RulesScanner(rulesSchema.parse({}), { spoolDir });
}

async function childCase(kind: 'text' | 'attachment'): Promise<void> {
  const spoolDir = mkdtempSync(join(tmpdir(), 'sg-bench-'));
  try {
    const row = await run(
      `100 MB ${kind === 'text' ? 'text body' : 'base64 attachment'}`,
      [bigMessage({ kind, bytes: 100 * MB })],
      newScanner(spoolDir),
    );
    if (readdirSync(spoolDir).length > 0) throw new Error('spool files left behind');
    process.stdout.write(`${JSON.stringify(row)}\n`);
  } finally {
    rmSync(spoolDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const child = process.argv[2];
  if (child === '--child-text' || child === '--child-attachment')
    return childCase(child === '--child-text' ? 'text' : 'attachment');

  const spoolDir = mkdtempSync(join(tmpdir(), 'sg-bench-'));
  const rows: Row[] = [];
  try {
    const scanner = newScanner(spoolDir);
    const twenty = Array.from({ length: 1000 }, (_, i) =>
      messageSource(buildMessage({ text: textOf(20_000) }), `t${i}`),
    );
    rows.push(await run('20 KB text (1,000)', twenty, scanner));
    rows.push(await run('mixed 5 KB-2 MB (1,000)', mixedCorpus(), scanner));
  } finally {
    rmSync(spoolDir, { recursive: true, force: true });
  }
  // The children run this file bundled for plain node: without a TypeScript loader in the
  // process, the peak RSS measured is sandgate's.
  const bundled = bundleForNode(fileURLToPath(import.meta.url));
  try {
    for (const flag of ['--child-text', '--child-attachment']) {
      const r = spawnSync(process.execPath, [bundled.file, flag], {
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`child ${flag} failed: ${r.stderr}`);
      rows.push(JSON.parse(r.stdout) as Row);
    }
  } finally {
    bundled.remove();
  }

  const header = ['case', 'msgs', 'MB', 'msgs/s', 'MB/s', 'CPU ms/msg', 'peak RSS MB', 'verdicts'];
  const table = rows.map((r) => [
    r.case,
    String(r.messages),
    (r.bytes / MB).toFixed(1),
    String(r.msgsPerSec),
    String(r.mbPerSec),
    r.cpuMsPerMsg.toFixed(3),
    String(r.peakRssMb),
    Object.entries(r.verdicts)
      .map(([k, v]) => `${k}:${v}`)
      .join(' '),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const row of table) console.log(line(row));

  const results = join(HERE, 'results');
  mkdirSync(results, { recursive: true });
  writeFileSync(
    join(results, 'rules-core.json'),
    `${JSON.stringify({ bench: 'rules-core', node: process.version, date: new Date().toISOString(), targets: { msgsPerSec20k: 1000, cpuMsPer20k: 0.3, peakRssMb100M: 150 }, rows }, null, 2)}\n`,
  );
}

await main();
