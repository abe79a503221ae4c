/**
 * The verdict core (ScanService: content key, cache, single-flight, policy) scanning generated
 * messages with the rules scanner: cold (every message new) and cached (the same corpus again,
 * each with a fresh Received line, as an MTA retry would arrive).
 * Run: npx tsx bench/core.ts   (writes bench/results/core.json)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configSchema } from '../src/core/config/schema.js';
import { silentLogger } from '../src/core/logger.js';
import type { MessageSource } from '../src/core/message.js';
import { createRuntime } from '../src/cli/runtime.js';
import { buildMessage, docx, messageSource } from '../test/support/specimens.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\r\n';

function corpus(kind: '20k' | 'mixed', n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const size =
      kind === '20k' ? 20 * 1024 : [5 * 1024, 20 * 1024, 100 * 1024, 500 * 1024, 2 * 1024 * 1024][i % 5]!;
    const text = `message ${i}\r\n` + LINE.repeat(Math.ceil(size / LINE.length));
    out.push(
      kind === '20k' || i % 3 !== 0
        ? buildMessage({ subject: `m${i}`, text })
        : buildMessage({
            subject: `m${i}`,
            text: text.slice(0, size / 2),
            attachments: [{ filename: `r${i}.docx`, content: docx() }],
          }),
    );
  }
  return out;
}

interface Row {
  case: string;
  messages: number;
  msgsPerSec: number;
  cpuMsPerMsg: number;
  p99Ms: number;
  peakRssMb: number;
  cacheHits: number;
}

async function run(
  name: string,
  messages: Buffer[],
  concurrency: number,
  passes: Array<'cold' | 'cached'>,
): Promise<Row[]> {
  const stateDir = mkdtempSync(join(tmpdir(), 'sandgate-bench-core-'));
  const config = configSchema.parse({ stateDir, scan: { concurrency } });
  const runtime = createRuntime(config, { log: silentLogger, frontEnd: 'bench' });
  const rows: Row[] = [];
  try {
    for (const pass of passes) {
      const sources: MessageSource[] = messages.map((m, i) =>
        messageSource(
          pass === 'cold' ? m : Buffer.concat([Buffer.from(`Received: from retry${i} by bench\r\n`), m]),
        ),
      );
      const latencies: number[] = [];
      let hits = 0;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < sources.length) {
            const source = sources[next++]!;
            const s = performance.now();
            const e = await runtime.evaluator.evaluate(source, { deadline: Date.now() + 60_000 });
            latencies.push(performance.now() - s);
            if (e.outcomes.every((o) => o.cached)) hits++;
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
        cacheHits: hits,
      });
    }
  } finally {
    await runtime.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
  return rows;
}

const rows = [
  ...(await run('20 KB text x1000, conc 1', corpus('20k', 1000), 1, ['cold', 'cached'])),
  ...(await run('20 KB text x1000, conc 8', corpus('20k', 1000), 8, ['cold', 'cached'])),
  ...(await run('mixed 5 KB-2 MB x1000, conc 8', corpus('mixed', 1000), 8, ['cold', 'cached'])),
];

const cols: Array<keyof Row> = [
  'case',
  'messages',
  'msgsPerSec',
  'cpuMsPerMsg',
  'p99Ms',
  'peakRssMb',
  'cacheHits',
];
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
