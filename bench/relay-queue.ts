// Relay queue mode benchmark: smtp-source -> sandgate relay (inline | queue, rules scanner) -> smtp-sink.
// Side by side in one run: 20 KB messages, concurrency 10, reused connections.
//   npx tsx bench/relay-queue.ts [messages=1000]
// Inline: msg/s through the relay (the client's 250 comes after the next hop's).
// Queue: accepted msg/s into the spool (250 once on disk) while the worker delivers, delivered msg/s
// out of it (until the queue is empty); then accept-only with the next hop held down, and drain-only.
// Needs smtp-source and smtp-sink (Debian package postfix) and root (smtp-sink -u nobody).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/cli/load-config.js';
import { createRuntime, type Runtime } from '../src/cli/runtime.js';
import { silentLogger } from '../src/core/logger.js';
import { buildRelay, type QueueMode } from '../src/cli/compose/relay.js';
import type { RelayServer } from '../src/smtp/server.js';
import { freePort, waitListening } from '../test/support/free-port.js';

const N = Number(process.argv[2] ?? 1000);
const SIZE = 20480;
const CONC = 10;

function sink(port: number): { stop(): Promise<void> } {
  const p = spawn('smtp-sink', ['-u', 'nobody', `127.0.0.1:${port}`, '1024'], { stdio: 'ignore' });
  return {
    stop: () =>
      new Promise((r) => {
        p.once('exit', () => r());
        p.kill();
      }),
  };
}

/** smtp-source with reused connections; resolves with the seconds it took. */
async function source(port: number): Promise<number> {
  const started = process.hrtime.bigint();
  const p = spawn(
    'smtp-source',
    [
      '-4',
      '-d',
      '-s',
      String(CONC),
      '-m',
      String(N),
      '-l',
      String(SIZE),
      '-f',
      'from@test.local',
      '-t',
      'to@test.local',
      `127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  p.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  if (code !== 0) throw new Error(`smtp-source failed (${String(code)}): ${err}`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function seconds(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

interface Setup {
  runtime: Runtime;
  relay: RelayServer;
  port: number;
  queue?: QueueMode;
  state: string;
}

async function start(mode: 'inline' | 'queue', hopPort: number): Promise<Setup> {
  const state = mkdtempSync(join(tmpdir(), `sg-bench-${mode}-`));
  const { config } = loadConfig({
    env: {},
    cwd: state,
    sets: [
      `stateDir=${state}`,
      'scan.chain=rules',
      'log.level=silent',
      `relay.mode=${mode}`,
      'relay.nextHopOptions.tls=none',
    ],
  });
  const runtime = await createRuntime(config, { log: silentLogger, frontEnd: 'relay' });
  const relayConfig = {
    ...config.relay,
    maxClients: 200,
    queue: { ...config.relay.queue, retryMin: 20, retryMax: 200 },
  };
  const nextHop = { kind: 'smtp' as const, host: '127.0.0.1', port: hopPort };
  const parts = buildRelay({
    relay: relayConfig,
    nextHop,
    evaluator: runtime.evaluator,
    quarantine: runtime.quarantine,
    log: silentLogger,
    ...(mode === 'queue' ? { queueStore: runtime.state.relayQueue } : {}),
    spoolDir: runtime.spoolDir,
    maxMessageSize: config.scan.maxMessageSize,
    memorySpoolThreshold: config.scan.memorySpoolThreshold,
    pollMs: 100,
  });
  const relay = parts.server;
  const queue = parts.queue;
  await queue?.start();
  const { port } = await relay.listen('127.0.0.1', 0);
  return { runtime, relay, port, state, ...(queue ? { queue } : {}) };
}

async function stop(s: Setup): Promise<void> {
  await s.relay.close();
  await s.queue?.close(5000);
  await s.runtime.close();
  rmSync(s.state, { recursive: true, force: true });
}

const sinkPort = await freePort();
const smtpSink = sink(sinkPort);
await waitListening(sinkPort);
const deadPort = await freePort(); // nothing listens: the next hop is down

const rows: Array<{ mode: string; measure: string; msgPerS: number }> = [];

{
  const s = await start('inline', sinkPort);
  rows.push({
    mode: 'inline',
    measure: 'accepted = delivered (250 after the next hop)',
    msgPerS: N / (await source(s.port)),
  });
  await stop(s);
}
{
  const s = await start('queue', sinkPort);
  const t0 = process.hrtime.bigint();
  const accept = await source(s.port);
  await s.queue!.worker.idle();
  const all = seconds(t0);
  rows.push({
    mode: 'queue',
    measure: 'accepted into the spool (next hop up, delivering meanwhile)',
    msgPerS: N / accept,
  });
  rows.push({
    mode: 'queue',
    measure: 'delivered out of it (first 250 in to queue empty)',
    msgPerS: N / all,
  });
  await stop(s);
}
{
  // Accept with the next hop down, then drain a full queue with it up.
  const down = await start('queue', deadPort);
  rows.push({
    mode: 'queue',
    measure: 'accepted into the spool (next hop down)',
    msgPerS: N / (await source(down.port)),
  });
  await down.relay.close();
  await down.queue!.close(5000);
  await down.runtime.close();
  const { config } = loadConfig({
    env: {},
    cwd: down.state,
    sets: [
      `stateDir=${down.state}`,
      'scan.chain=rules',
      'log.level=silent',
      'relay.mode=queue',
      'relay.nextHopOptions.tls=none',
    ],
  });
  const runtime = await createRuntime(config, { log: silentLogger, frontEnd: 'relay' });
  const queue = buildRelay({
    relay: config.relay,
    queueStore: runtime.state.relayQueue,
    nextHop: { kind: 'smtp', host: '127.0.0.1', port: sinkPort },
    evaluator: runtime.evaluator,
    quarantine: runtime.quarantine,
    log: silentLogger,
    spoolDir: runtime.spoolDir,
    maxMessageSize: config.scan.maxMessageSize,
    memorySpoolThreshold: config.scan.memorySpoolThreshold,
  }).queue as QueueMode;
  const t0 = process.hrtime.bigint();
  await queue.start();
  await queue.worker.idle();
  rows.push({
    mode: 'queue',
    measure: 'delivered out of a full spool (drain only)',
    msgPerS: N / seconds(t0),
  });
  await queue.close(5000);
  await runtime.close();
  rmSync(down.state, { recursive: true, force: true });
}
await smtpSink.stop();

const lines = ['| mode | measure | msg/s |', '|---|---|---|'];
for (const r of rows) lines.push(`| ${r.mode} | ${r.measure} | ${r.msgPerS.toFixed(0)} |`);
const table = `relay queue benchmark: ${N} x ${SIZE} B, concurrency ${CONC}, reused connections, rules scanner, ${new Date().toISOString()}\n${lines.join('\n')}\n`;
console.log(table);
mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
writeFileSync(join(import.meta.dirname, 'results', 'relay-queue.md'), table);
