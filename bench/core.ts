/**
 * The verdict core (ScanService: content key, policy, headers, metrics) scanning generated messages
 * with the rules scanner: first sight, then the same corpus again with a fresh Received line on
 * each message, as an MTA's retry arrives. The rules engine is a local scanner: recomputing it is
 * cheaper than a cache lookup, so the retry pass shows the retry path's cost, not cache hits (the
 * verdict cache serves clamd and PT Sandbox; see bench/clamd.ts and bench/pt-sandbox.ts).
 * Run: npx tsx bench/core.ts   (writes bench/results/core.json)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configSchema } from '../src/config/schema.js';
import { silentLogger } from '../src/core/logger.js';
import type { MessageSource } from '../src/core/message.js';
import { createRuntime } from '../src/cli/runtime.js';
import { Readable } from 'node:stream';
import { buildMessage, docx } from '../test/support/specimens.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\r\n';

/**
 * Messages as a shared body plus a per-message header, produced when scanned, so peak RSS measures
 * sandgate and not the corpus. Every message is distinct content (its Subject differs).
 */
class CorpusMessage implements MessageSource {
  readonly size: number;
  readonly envelope = { sender: 'sender@example.org', recipients: ['rcpt@example.net'], frontEnd: 'bench' };
  constructor(
    readonly msgId: string,
    private readonly head: Buffer,
    private readonly body: Buffer,
  ) {
    this.size = head.length + body.length;
  }
  open(): Readable {
    return Readable.from([this.head, this.body]);
  }
}

const SIZES_MIXED = [5 * 1024, 20 * 1024, 100 * 1024, 500 * 1024, 2 * 1024 * 1024];
const templates = new Map<string, Buffer>();
function template(size: number, attachment: boolean): Buffer {
  const key = `${size}:${attachment}`;
  let t = templates.get(key);
  if (t === undefined) {
    const text = LINE.repeat(Math.ceil(size / LINE.length));
    t = attachment
      ? buildMessage({
          text: text.slice(0, size / 2),
          attachments: [{ filename: 'report.docx', content: docx() }],
        })
      : buildMessage({ text });
    templates.set(key, t);
  }
  return t;
}

function corpus(kind: '20k' | 'mixed', n: number, retry: boolean): MessageSource[] {
  return Array.from({ length: n }, (_, i) => {
    const size = kind === '20k' ? 20 * 1024 : SIZES_MIXED[i % SIZES_MIXED.length]!;
    const head = Buffer.from(`${retry ? `Received: from retry${i} by bench\r\n` : ''}X-Bench-Id: ${i}\r\n`);
    return new CorpusMessage(`sg-bench-${i}`, head, template(size, kind === 'mixed' && i % 3 === 0));
  });
}

interface Row {
  case: string;
  messages: number;
  msgsPerSec: number;
  cpuMsPerMsg: number;
  p99Ms: number;
  peakRssMb: number;
}

async function run(name: string, kind: '20k' | 'mixed', concurrency: number): Promise<Row[]> {
  const stateDir = mkdtempSync(join(tmpdir(), 'sandgate-bench-core-'));
  const config = configSchema.parse({ stateDir, scan: { concurrency } });
  const runtime = await createRuntime(config, { log: silentLogger, frontEnd: 'bench' });
  const rows: Row[] = [];
  try {
    for (const pass of ['first sight', 'retry'] as const) {
      const sources = corpus(kind, 1000, pass === 'retry');
      const latencies: number[] = [];
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < sources.length) {
            const source = sources[next++]!;
            const s = performance.now();
            await runtime.evaluator.evaluate(source, { deadline: Date.now() + 60_000 });
            latencies.push(performance.now() - s);
          }
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      latencies.sort((a, b) => a - b);
      rows.push({
        case: `${name}, ${pass}`,
        messages: sources.length,
        msgsPerSec: Math.round(sources.length / seconds),
        cpuMsPerMsg: Number(((cpu.user + cpu.system) / 1000 / sources.length).toFixed(3)),
        p99Ms: Number((latencies[Math.floor(latencies.length * 0.99)] ?? 0).toFixed(2)),
        peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      });
    }
  } finally {
    await runtime.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
  return rows;
}

// Warm-up (JIT, module loading), not measured.
await run('warm-up', '20k', 4);

const rows = [
  ...(await run('20 KB text x1000, conc 1', '20k', 1)),
  ...(await run('20 KB text x1000, conc 8', '20k', 8)),
  ...(await run('mixed 5 KB-2 MB x1000, conc 8', 'mixed', 8)),
];

const cols: Array<keyof Row> = ['case', 'messages', 'msgsPerSec', 'cpuMsPerMsg', 'p99Ms', 'peakRssMb'];
const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ');
console.log(line(cols));
console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
for (const r of rows) console.log(line(cols.map((c) => String(r[c]))));
mkdirSync(join(HERE, 'results'), { recursive: true });
writeFileSync(
  join(HERE, 'results', 'core.json'),
  JSON.stringify({ date: new Date().toISOString(), node: process.version, rows }, null, 2),
);
