// Child process for bench/relay.ts: one SMTP filter under test, in a process of its own so that
// its CPU time and peak RSS are its own (the parent reads /proc/<pid>).
//   node --import tsx bench/_relay-child.ts <kind> <listenPort|0> <nextHopPort> <stateDir> [key=value ...]
// kind: relay           sandgate relay with the rules scanner, as `sandgate relay` builds it
//                       (runtime, info log to <stateDir>/relay.log, loopback peers trusted)
//       relay-untrusted the same with relay.trustedPeers empty (smtp-server's 100 ms greeting pause kept)
//       proxy           environment.md's pass-through proxy (smtp-server -> nodemailer pool of 10)
// Further arguments are config settings for the relay (as --set). Prints "ready <port>"; stops
// when stdin ends.
import type net from 'node:net';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { loadConfig } from '../src/cli/load-config.js';
import { createLogger } from '../src/cli/logger.js';
import { createRuntime } from '../src/cli/runtime.js';
import { RelayServer } from '../src/smtp/server.js';

const [kind = 'relay', listenArg = '0', hopArg = '', stateDir = '', ...extraSets] = process.argv.slice(2);
const listenPort = Number(listenArg);
const hopPort = Number(hopArg);
const POOL = 10;

async function startProxy(): Promise<{ port: number; close(): Promise<void> }> {
  const next = nodemailer.createTransport({
    host: '127.0.0.1',
    port: hopPort,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: POOL,
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
        (info) => callback(null, `queued as next hop said: ${info.response}`),
        (err: Error) => {
          stream.resume();
          const done = () => callback(err);
          if (stream.readableEnded) done();
          else stream.once('end', done);
        },
      );
    },
  });
  // A client that resets its connection (smtp-source being stopped) is not a reason to crash.
  server.on('error', () => undefined);
  await new Promise<void>((r) => server.listen(listenPort, '127.0.0.1', () => r()));
  return {
    port: (server.server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        next.close();
        server.close(() => r());
      }),
  };
}

async function startRelay(trusted: boolean): Promise<{ port: number; close(): Promise<void> }> {
  const { config } = loadConfig({
    env: {},
    cwd: stateDir,
    sets: [
      `stateDir=${stateDir}`,
      'scan.chain=rules',
      'log.level=info',
      `log.file=${join(stateDir, 'relay.log')}`,
      'relay.maxClients=200',
      ...(trusted ? [] : ['relay.trustedPeers=']),
      ...extraSets,
    ],
  });
  const log = createLogger(config, 'file-or-none');
  const runtime = createRuntime(config, { log, frontEnd: 'relay' });
  const relay = new RelayServer({
    relay: config.relay,
    evaluator: runtime.evaluator,
    log,
    spoolDir: runtime.spoolDir,
    maxMessageSize: config.scan.maxMessageSize,
    memorySpoolThreshold: config.scan.memorySpoolThreshold,
    nextHop: { kind: 'smtp', host: '127.0.0.1', port: hopPort },
  });
  const { port } = await relay.listen('127.0.0.1', listenPort);
  return {
    port,
    async close() {
      await relay.close();
      await runtime.close();
      log.flush();
    },
  };
}

const filter = kind === 'proxy' ? await startProxy() : await startRelay(kind !== 'relay-untrusted');
process.stdout.write(`ready ${filter.port}\n`);
process.stdin.resume();
process.stdin.once('end', () => {
  void filter.close().then(() => process.exit(0));
});
