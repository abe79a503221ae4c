/**
 * SQLite next to PostgreSQL (a real server started here, loopback), in the same run:
 *
 * 1. Verdict-cache hit latency: the state work a cache-hit message adds (one VerdictStore.get per
 *    scanner).
 * 2. Relay throughput with cache hits: the built `sandgate relay` as a process of its own per
 *    backend (`npm run build` first), scanners rules + PT Sandbox (the fake,
 *    test/fakes/fake-pt-sandbox.ts), 20 KB messages over 10 reused connections to smtp-sink
 *    (Postfix's). 20 distinct contents are sent once per relay first (one PT task each), then
 *    every measured message is one of them again, so both verdicts come from the state's cache.
 *    Rounds alternate between the backends; msg/s, latency (MAIL FROM to the reply to the final
 *    dot) and CPU per message of the relay process and of the PostgreSQL server (postmaster and
 *    its children, from /proc: unlike wall times, not inflated by other load on the machine) per
 *    round, the medians printed.
 *
 * Target: PostgreSQL adds at most 5 ms at p99 per message. Prints tables.
 *   npx tsx bench/state-backends.ts   BENCH_RELAY_MESSAGES=N per round (default 2000),
 *   BENCH_RELAY_ROUNDS=N rounds per backend (default 5), BENCH_SKIP_RELAY=1 skips part 2.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { silentLogger } from '../src/core/logger.js';
import type { StatePorts, VerdictKey } from '../src/core/ports.js';
import { openPostgresState } from '../src/store/pg-state.js';
import { openSqliteState } from '../src/store/sqlite-state.js';
import { freshSchema, testConnection } from '../test/support/pg-backend.js';
import { startPostgres, type TestPostgres } from '../test/support/postgres.js';
import { FAKE_PT_TOKEN, startFakePtSandbox, type FakePtSandbox } from '../test/fakes/fake-pt-sandbox.js';
import { freePort, waitListening } from '../test/support/free-port.js';
import { startRelayProcess, type RelayProcess } from '../test/support/relay-process.js';
import { SmtpTalk } from '../test/support/smtp-talk.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const N = 5000;
const KEYS = 200;
const RELAY_N = Number(process.env.BENCH_RELAY_MESSAGES ?? 2000);
const RELAY_ROUNDS = Number(process.env.BENCH_RELAY_ROUNDS ?? 5);
const CONTENTS = 20;
const SIZE = 20 * 1024;
const CONC = 10;

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

const LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\r\n';
/** Content number i (0 <= i < CONTENTS), 20 KB: the same bytes every time it is sent. */
function message20k(i: number): string {
  const head =
    `From: <from@test.local>\r\nTo: <to@test.local>\r\nSubject: state bench ${i}\r\n` +
    `Message-ID: <state-bench-${i}@test.local>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n`;
  return head + LINE.repeat(Math.ceil((SIZE - head.length) / LINE.length));
}
const MESSAGES = Array.from({ length: CONTENTS }, (_, i) => `${message20k(i)}.\r\n`);

/** Postfix's smtp-sink as the next hop: accepts and discards, as fast as it gets. */
async function startSink(): Promise<{ port: number; stop: () => void }> {
  const port = await freePort();
  const p = spawn('smtp-sink', ['-u', 'nobody', `127.0.0.1:${port}`, '1024'], { stdio: 'ignore' });
  await waitListening(port);
  return { port, stop: () => p.kill() };
}

/** `sandgate relay` with rules + PT Sandbox on one backend (state.url set: PostgreSQL). */
async function startBenchRelay(
  dir: string,
  sandbox: FakePtSandbox,
  sinkPort: number,
  stateUrl?: string,
): Promise<RelayProcess> {
  mkdirSync(dir, { recursive: true });
  const configFile = join(dir, 'sandgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      stateDir: join(dir, 'state'),
      ...(stateUrl !== undefined ? { state: { url: stateUrl, tls: 'disable' } } : {}),
      scan: { chain: ['rules', 'pt-sandbox'] },
      scanners: { ptSandbox: { url: sandbox.url, polling: { firstDelay: '50ms', interval: '50ms' } } },
      relay: { listen: '127.0.0.1:0', nextHop: `smtp://127.0.0.1:${sinkPort}` },
    }),
  );
  return startRelayProcess(configFile, false, { env: { SANDGATE_PT_SANDBOX_TOKEN: FAKE_PT_TOKEN } });
}

/**
 * `total` messages over CONC reused connections (contents cycling), each timed from MAIL FROM to
 * the reply to its final dot. Resolves with the latencies (ms) and the wall time (s).
 */
async function sendMessages(port: number, total: number): Promise<{ ms: number[]; wallS: number }> {
  const ms: number[] = [];
  let next = 0;
  const expect = (r: { code: number; text: string }, want: number, what: string) => {
    if (r.code !== want) throw new Error(`${what}: ${r.code} ${r.text} (expected ${want})`);
  };
  const one = async () => {
    const c = await SmtpTalk.open(port);
    try {
      expect(await c.read(), 220, 'greeting');
      expect(await c.cmd('EHLO bench.test.local'), 250, 'EHLO');
      while (next < total) {
        const i = next++;
        const t0 = process.hrtime.bigint();
        expect(await c.cmd('MAIL FROM:<from@test.local>'), 250, 'MAIL');
        expect(await c.cmd('RCPT TO:<to@test.local>'), 250, 'RCPT');
        expect(await c.cmd('DATA'), 354, 'DATA');
        c.send(MESSAGES[i % CONTENTS] as string);
        expect(await c.read(), 250, 'final dot');
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      await c.cmd('QUIT');
    } finally {
      c.end();
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CONC }, one));
  return { ms, wallS: Number(process.hrtime.bigint() - t0) / 1e9 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const CLK_TCK = 100;

/** CPU seconds (user + system) of a process, from /proc; 0 once it is gone. */
function cpuS(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds of the PostgreSQL server: the postmaster and its children (the backends serving the
 * relay's pool, the WAL writer, ...). Robust to the other load on the machine, unlike wall times.
 */
function pgServerCpuS(postmaster: number): number {
  let sum = cpuS(postmaster);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) sum += cpuS(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}

async function relayBench(server: TestPostgres, dir: string): Promise<void> {
  const sandbox = await startFakePtSandbox({ taskDurationMs: 50 });
  const sink = await startSink();
  const relays: Array<{ name: string; relay: RelayProcess }> = [];
  try {
    const admin = await server.admin();
    try {
      await admin.query('CREATE DATABASE bench_relay');
    } finally {
      await admin.end();
    }
    const pgUrl = `postgres://${server.user}@${server.host}:${server.port}/bench_relay`;
    const postmaster = await (async () => {
      const c = await server.admin();
      try {
        const { rows } = await c.query<{ setting: string }>(
          "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
        );
        return Number(readFileSync(join(rows[0]?.setting ?? '', 'postmaster.pid'), 'utf8').split('\n')[0]);
      } finally {
        await c.end();
      }
    })();
    relays.push({ name: 'SQLite', relay: await startBenchRelay(join(dir, 'sqlite'), sandbox, sink.port) });
    relays.push({
      name: 'PostgreSQL',
      relay: await startBenchRelay(join(dir, 'pg'), sandbox, sink.port, pgUrl),
    });
    // Fill each backend's cache (one PT task per content and relay), then warm up (JIT, pools).
    for (const { relay } of relays) {
      await sendMessages(relay.relayPort, CONTENTS);
      await sendMessages(relay.relayPort, 500);
    }
    const tasksBefore = sandbox.counters['analysis/createScanTask'] ?? 0;
    const results: Record<
      string,
      Array<{ msgPerS: number; p50: number; p99: number; relayCpuMs: number; pgCpuMs: number }>
    > = {};
    for (let round = 0; round < RELAY_ROUNDS; round++) {
      // Alternate the order each round, so neither backend always runs first.
      const order = round % 2 === 0 ? relays : [...relays].reverse();
      for (const { name, relay } of order) {
        const pid = relay.child.pid as number;
        const [relayBefore, pgBefore] = [cpuS(pid), pgServerCpuS(postmaster)];
        const { ms, wallS } = await sendMessages(relay.relayPort, RELAY_N);
        const relayCpuMs = ((cpuS(pid) - relayBefore) * 1000) / RELAY_N;
        const pgCpuMs = ((pgServerCpuS(postmaster) - pgBefore) * 1000) / RELAY_N;
        ms.sort((a, b) => a - b);
        (results[name] ??= []).push({
          msgPerS: RELAY_N / wallS,
          p50: pct(ms, 50),
          p99: pct(ms, 99),
          relayCpuMs,
          pgCpuMs,
        });
      }
    }
    const newTasks = (sandbox.counters['analysis/createScanTask'] ?? 0) - tasksBefore;
    if (newTasks !== 0) throw new Error(`${newTasks} PT tasks created while measuring: not all cache hits`);
    const sum = (name: string) => {
      const r = results[name] ?? [];
      return {
        msgPerS: median(r.map((x) => x.msgPerS)),
        p50: median(r.map((x) => x.p50)),
        p99: median(r.map((x) => x.p99)),
        relayCpuMs: median(r.map((x) => x.relayCpuMs)),
        pgCpuMs: median(r.map((x) => x.pgCpuMs)),
        runs: r.map((x) => Math.round(x.msgPerS)).join(' / '),
      };
    };
    const sq = sum('SQLite');
    const pg = sum('PostgreSQL');
    console.log(
      `\nrelay, rules + PT Sandbox (fake), every verdict a cache hit: ${SIZE / 1024} KB, ${CONC} reused connections, ` +
        `${RELAY_ROUNDS} rounds x ${RELAY_N} messages per backend, medians; PT tasks created while measuring: ${newTasks}\n`,
    );
    console.log(
      '| backend    | msg/s | p50 (ms) | p99 (ms) | relay CPU ms/msg | PostgreSQL CPU ms/msg | msg/s per round |',
    );
    console.log(
      '| ---------- | ----- | -------- | -------- | ---------------- | --------------------- | --------------- |',
    );
    for (const [name, r] of [
      ['SQLite', sq],
      ['PostgreSQL', pg],
    ] as const) {
      console.log(
        `| ${name.padEnd(10)} | ${Math.round(r.msgPerS).toString().padStart(5)} | ${r.p50.toFixed(2).padStart(8)} | ${r.p99.toFixed(2).padStart(8)} | ${r.relayCpuMs.toFixed(2).padStart(16)} | ${r.pgCpuMs.toFixed(2).padStart(21)} | ${r.runs} |`,
      );
    }
    console.log(
      `\nadded per message on PostgreSQL: p50 ${(pg.p50 - sq.p50).toFixed(2)} ms, p99 ${(pg.p99 - sq.p99).toFixed(2)} ms (target <= 5 ms); ` +
        `throughput ${((pg.msgPerS / sq.msgPerS) * 100).toFixed(0)} % of SQLite's; CPU per message (relay + ` +
        `PostgreSQL server) ${(sq.relayCpuMs + sq.pgCpuMs).toFixed(2)} ms on SQLite, ${(pg.relayCpuMs + pg.pgCpuMs).toFixed(2)} ms on PostgreSQL`,
    );
  } finally {
    for (const { relay } of relays) await relay.stop();
    sink.stop();
    await sandbox.close();
  }
}

const dir = mkdtempSync(join(tmpdir(), 'sg-bench-state-'));
const server = await startPostgres();
console.log(
  `# state backends, ${new Date().toISOString()}; load average at the start: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}\n`,
);
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
  if (process.env.BENCH_SKIP_RELAY !== '1') await relayBench(server, dir);
  console.log(
    `\nload average at the end: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
} finally {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
