// Child process for bench/relay.ts: one SMTP filter under test, in a process of its own so that
// its CPU time and peak RSS are its own (the parent reads /proc/<pid>).
//   node <bundle of this file> <kind> <listenPort|0> <nextHopPort> <stateDir> [key=value ...]
// kind: relay           the `sandgate relay` command itself (its run()) with the rules scanner
//                       (runtime, info log to <stateDir>/relay.log, loopback peers trusted)
//       relay-untrusted the same with relay.trustedPeers empty (smtp-server's 100 ms greeting pause kept)
//       proxy           environment.md's pass-through proxy (smtp-server -> nodemailer pool of 10)
//       protocol-milter the milter protocol as sandgate speaks it, without spool, scan or log (the
//                       milter's counterpart of the pass-through proxy), on inet:127.0.0.1:<listenPort>
//       milter          the `sandgate milter` command itself (its run()) with the rules scanner, on
//                       inet:127.0.0.1:<listenPort> (nextHopPort unused: Postfix queues the mail)
// Further arguments are config settings for the relay (as --set). Prints "ready <port>"; stops
// when stdin ends. A line "gc" on stdin is answered with "gc <minor> <major> <major ms>": the
// garbage collections of this process so far (young generation, mark-compacts, and the
// mark-compacts' pauses).
import net from 'node:net';
import { join } from 'node:path';
import {
  constants,
  PerformanceObserver,
  type NodeGCPerformanceDetail,
  type PerformanceEntry,
} from 'node:perf_hooks';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { run as runMilter } from '../src/cli/commands/milter.js';
import { decodeCommand, encodeReply, PacketReader } from '../src/milter/codec.js';
import { NO_REPLY, WANTED_ACTIONS, WANTED_PROTOCOL } from '../src/milter/session.js';
import { run as runRelay } from '../src/cli/commands/relay.js';
import { freePort, waitListening } from '../test/support/free-port.js';

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

/**
 * The relay exactly as `sandgate relay` runs it: the command's own run() with its runtime, summary
 * line and metrics, only the settings below given as --set (log to a file, loopback next hop).
 */
async function startRelay(trusted: boolean): Promise<{ port: number; close(): Promise<void> }> {
  const port = listenPort === 0 ? await freePort() : listenPort;
  const sets = [
    `stateDir=${stateDir}`,
    'scan.chain=rules',
    'log.level=info',
    `log.file=${join(stateDir, 'relay.log')}`,
    `relay.listen=127.0.0.1:${port}`,
    `relay.nextHop=smtp://127.0.0.1:${hopPort}`,
    'relay.maxClients=200',
    ...(trusted ? [] : ['relay.trustedPeers=']),
    ...extraSets,
  ];
  let stop = () => undefined as void;
  const stopped = new Promise<void>((r) => (stop = r));
  const io = { stdin: process.stdin, stdout: process.stderr, stderr: process.stderr, env: {}, cwd: stateDir };
  const exited = runRelay(
    sets.flatMap((s) => ['--set', s]),
    io,
    { stop: stopped },
  );
  await Promise.race([
    waitListening(port),
    exited.then((code) => Promise.reject(new Error(`sandgate relay exited with ${code}`))),
  ]);
  return {
    port,
    async close() {
      stop();
      await exited;
    },
  };
}

/** The milter exactly as `sandgate milter` runs it, with the rules scanner and an info log to a file. */
async function startMilter(): Promise<{ port: number; close(): Promise<void> }> {
  const port = listenPort === 0 ? await freePort() : listenPort;
  const sets = [
    `stateDir=${stateDir}`,
    'scan.chain=rules',
    'log.level=info',
    `log.file=${join(stateDir, 'milter.log')}`,
    `milter.listen=inet:127.0.0.1:${port}`,
    ...extraSets,
  ];
  let stop = () => undefined as void;
  const stopped = new Promise<void>((r) => (stop = r));
  const io = { stdin: process.stdin, stdout: process.stderr, stderr: process.stderr, env: {}, cwd: stateDir };
  const exited = runMilter(
    sets.flatMap((s) => ['--set', s]),
    io,
    { stop: stopped },
  );
  await Promise.race([
    waitListening(port),
    exited.then((code) => Promise.reject(new Error(`sandgate milter exited with ${code}`))),
  ]);
  return {
    port,
    async close() {
      stop();
      await exited;
    },
  };
}

/**
 * The milter counterpart of the pass-through proxy: the milter protocol exactly as sandgate
 * negotiates and answers it (the same events, no-reply flags and two INSHEADER edits of the same
 * length, then ACCEPT), with no spool, no scan and no log. What Postfix spends on a milter, and what
 * a milter cannot avoid, against what sandgate's own work adds.
 */
async function startProtocolMilter(): Promise<{ port: number; close(): Promise<void> }> {
  const port = listenPort === 0 ? await freePort() : listenPort;
  const edits = Buffer.concat([
    encodeReply({
      kind: 'insHeader',
      index: 0,
      name: 'X-Sandgate-Verdict',
      value: ` clean; reason=clean; scanners=rules:clean; id=sg-mivtnqpq-0123456789`,
    }),
    encodeReply({
      kind: 'insHeader',
      index: 1,
      name: 'X-Sandgate-Mark',
      value: ` v=1; k=clean; t=1764845000; c=${'0'.repeat(43)}; s=${'0'.repeat(43)}`,
    }),
    encodeReply({ kind: 'accept' }),
  ]);
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const reader = new PacketReader();
    let protocol = 0;
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      for (const packet of reader.push(chunk)) {
        const cmd = decodeCommand(packet);
        if (cmd.kind === 'optneg') {
          protocol = WANTED_PROTOCOL & cmd.protocol;
          socket.write(encodeReply({ kind: 'optneg', version: 6, actions: WANTED_ACTIONS, protocol }));
        } else if (cmd.kind === 'eom') socket.write(edits);
        else if (cmd.kind === 'quit') socket.end();
        else if (cmd.kind !== 'macro' && cmd.kind !== 'abort' && cmd.kind !== 'quitNc') {
          const nr = NO_REPLY[cmd.kind] ?? 0;
          if ((protocol & nr) === 0) socket.write(encodeReply({ kind: 'continue' }));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const gc = { minor: 0, major: 0, majorMs: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as PerformanceEntry & { detail?: NodeGCPerformanceDetail }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
    else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      gc.major++;
      gc.majorMs += e.duration;
    }
  }
}).observe({ entryTypes: ['gc'] });

const filter =
  kind === 'proxy'
    ? await startProxy()
    : kind === 'milter'
      ? await startMilter()
      : kind === 'protocol-milter'
        ? await startProtocolMilter()
        : await startRelay(kind !== 'relay-untrusted');
process.stdout.write(`ready ${filter.port}\n`);
let input = '';
process.stdin.on('data', (c: Buffer) => {
  input += c.toString();
  for (let nl = input.indexOf('\n'); nl >= 0; nl = input.indexOf('\n')) {
    if (input.slice(0, nl).trim() === 'gc') {
      process.stdout.write(`gc ${gc.minor} ${gc.major} ${gc.majorMs.toFixed(1)}\n`);
    }
    input = input.slice(nl + 1);
  }
});
process.stdin.once('end', () => {
  void filter.close().then(() => process.exit(0));
});
