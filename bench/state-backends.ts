/**
 * Verdict-cache hit latency on SQLite and on PostgreSQL (a real server started here, loopback),
 * in the same run: the state work a cache-hit message adds (one VerdictStore.get per scanner).
 * Target: PostgreSQL adds at most 5 ms at p99 per message. Prints a table.
 * Not measured here yet: relay throughput with the PT Sandbox fake on both backends.
 */
import { silentLogger } from '../src/core/logger.js';
import type { StatePorts, VerdictKey } from '../src/core/ports.js';
import { openPostgresState } from '../src/store/pg-state.js';
import { openSqliteState } from '../src/store/sqlite-state.js';
import { freshSchema, testConnection } from '../test/support/pg-backend.js';
import { startPostgres } from '../test/support/postgres.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const N = 5000;
const KEYS = 200;

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function measure(state: StatePorts): Promise<{ p50: number; p99: number; perSec: number }> {
  const keys: VerdictKey[] = Array.from({ length: KEYS }, (_, i) => ({
    scanner: 'rules',
    fingerprint: 'fp',
    contentKey: i.toString(16).padStart(64, '0'),
  }));
  const now = Date.now();
  for (const k of keys) await state.verdicts.put(k, { finding: { kind: 'clean' } }, now, now + 3_600_000);
  for (let i = 0; i < 500; i++) await state.verdicts.get(keys[i % KEYS] as VerdictKey, now);
  const times: number[] = [];
  const started = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    const hit = await state.verdicts.get(keys[i % KEYS] as VerdictKey, now);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (hit === undefined) throw new Error('expected a cache hit');
  }
  const total = Number(process.hrtime.bigint() - started) / 1e9;
  times.sort((a, b) => a - b);
  return { p50: pct(times, 50), p99: pct(times, 99), perSec: N / total };
}

const dir = mkdtempSync(join(tmpdir(), 'sg-bench-state-'));
const server = await startPostgres();
try {
  const sqlite = openSqliteState(dir);
  const s = await measure(sqlite);
  await sqlite.close();
  const schema = await freshSchema(server);
  const pg = await openPostgresState(testConnection(server, schema), {
    log: silentLogger,
    relayQueue: () => {
      throw new Error('unused');
    },
  });
  const p = await measure(pg);
  await pg.close();
  const row = (name: string, r: typeof s) =>
    `| ${name.padEnd(10)} | ${r.p50.toFixed(3).padStart(8)} | ${r.p99.toFixed(3).padStart(8)} | ${Math.round(r.perSec).toString().padStart(8)} |`;
  console.log(`verdict cache hit (VerdictStore.get), ${N} sequential reads over ${KEYS} keys\n`);
  console.log('| backend    | p50 (ms) | p99 (ms) | reads/s  |');
  console.log('| ---------- | -------- | -------- | -------- |');
  console.log(row('SQLite', s));
  console.log(row('PostgreSQL', p));
  console.log(
    `\nadded p99 per cache-hit read on PostgreSQL: ${(p.p99 - s.p99).toFixed(3)} ms (target <= 5 ms)`,
  );
} finally {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
