// Relay benchmark: smtp-source -> (pass-through proxy | sandgate relay with the rules scanner) -> smtp-sink.
// Side by side in one run, 20 KB messages, concurrency 10, with and without connection reuse.
//   npx tsx bench/relay.ts [messages=1000]
// Needs smtp-source and smtp-sink (Debian package postfix) and root (smtp-sink -u nobody).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { loadConfig } from '../src/cli/load-config.js';
import { createRuntime } from '../src/cli/runtime.js';
import { silentLogger } from '../src/core/logger.js';
import { RelayServer } from '../src/smtp/server.js';

const N = Number(process.argv[2] ?? 1000);
const SIZE = 20480;
const CONC = 10;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** environment.md's pass-through proxy (smtp-server -> nodemailer pool), the baseline. */
async function startProxy(nextPort: number): Promise<{ port: number; close(): Promise<void> }> {
  const next = nodemailer.createTransport({
    host: '127.0.0.1',
    port: nextPort,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: CONC,
    maxMessages: Infinity,
    name: 'proxy.test.local',
  });
  const server = new SMTPServer({
    name: 'proxy.test.local',
    logger: false,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    disableReverseLookup: true,
    size: 50 * 1024 * 1024,
    onData(stream, session, callback) {
      const envelope = {
        from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
        to: session.envelope.rcptTo.map((r) => r.address),
      };
      next.sendMail({ envelope, raw: stream }).then(
        (info) => callback(null, `queued: ${info.response}`),
        (err: Error) => {
          stream.resume();
          stream.once('end', () => callback(err));
        },
      );
    },
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        next.close();
        server.close(() => r());
      }),
  };
}

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

/** Runs smtp-source (asynchronously: the relay under test lives in this process). Returns msg/s. */
async function source(port: number, reuse: boolean): Promise<number> {
  const started = process.hrtime.bigint();
  const p = spawn(
    'smtp-source',
    [
      '-4',
      ...(reuse ? ['-d'] : []),
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
  return N / (Number(process.hrtime.bigint() - started) / 1e9);
}

async function waitListening(port: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setImmediate(r));
  }
}

const sinkPort = await freePort();
const s = sink(sinkPort);
await waitListening(sinkPort);
const state = mkdtempSync(join(tmpdir(), 'sg-bench-'));
const { config } = loadConfig({
  env: {},
  cwd: state,
  sets: [`stateDir=${state}`, 'scan.chain=rules', 'log.level=silent'],
});
const runtime = createRuntime(config, { log: silentLogger, frontEnd: 'relay' });
const relay = new RelayServer({
  relay: { ...config.relay, maxClients: 200 },
  evaluator: runtime.evaluator,
  log: silentLogger,
  spoolDir: runtime.spoolDir,
  maxMessageSize: config.scan.maxMessageSize,
  memorySpoolThreshold: config.scan.memorySpoolThreshold,
  nextHop: { kind: 'smtp', host: '127.0.0.1', port: sinkPort },
});
const { port: relayPort } = await relay.listen('127.0.0.1', 0);
const proxy = await startProxy(sinkPort);

const rows: Array<{ path: string; reuse: boolean; msgPerS: number }> = [];
for (const reuse of [true, false]) {
  rows.push({ path: 'pass-through proxy', reuse, msgPerS: await source(proxy.port, reuse) });
  rows.push({ path: 'sandgate relay (rules)', reuse, msgPerS: await source(relayPort, reuse) });
}
await relay.close();
await proxy.close();
await runtime.close();
await s.stop();
rmSync(state, { recursive: true, force: true });

const lines = ['| path | connections | msg/s | vs proxy |', '|---|---|---|---|'];
for (const r of rows) {
  const base = rows.find((x) => x.path === 'pass-through proxy' && x.reuse === r.reuse)!.msgPerS;
  lines.push(
    `| ${r.path} | ${r.reuse ? 'reused' : 'new per message'} | ${r.msgPerS.toFixed(0)} | ${((r.msgPerS / base) * 100).toFixed(0)} % |`,
  );
}
const table = `relay benchmark: ${N} x ${SIZE} B, concurrency ${CONC}, ${new Date().toISOString()}\n${lines.join('\n')}\n`;
console.log(table);
mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
writeFileSync(join(import.meta.dirname, 'results', 'relay.md'), table);
