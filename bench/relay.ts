// Relay benchmark, side by side in one run (issue 5, Benchmark): the sandgate relay with the rules
// scanner against environment.md's pass-through proxy (smtp-server -> nodemailer pool), each in a
// child process of its own (bench/_relay-child.ts bundled for plain node), smtp-sink as next hop,
// smtp-source as client.
//   npx tsx bench/relay.ts [messages=4000] [--skip-postfix] [--skip-rss] [--only-postfix] [--node-defaults]
//   --only-postfix: rows (c) and (d) only. --node-defaults: both filters without NODE_FLAGS.
//   --pf-rounds=N: rounds of each path in row (c) (default 10; fewer for a quick check).
//   --pf-paths=alone,pmilter,milter,proxy,relay: the paths of row (c) (default all five).
//   --pf-reuse: row (c) with 10 reused connections (smtp-source -d) instead of one per message.
// Rows: (a) 20 KB, concurrency 10, reused connections: msg/s (median of 5 interleaved runs, and
// the relay/proxy ratio of each round), filter CPU per message, and added p50/p99 latency (a Node
// client, 10 reused connections, medians of 5 rounds of 1,000); (b) a new connection per message,
// with loopback trusted (no greeting pause) and untrusted; (c) Postfix end to end
// (test/support/postfix.ts): Postfix alone, Postfix with a protocol-only milter (the milter's
// pass-through: sandgate's negotiation and header edits, no scan), Postfix with the sandgate milter, and Postfix ->
// filter -> Postfix for both filters, all behind one Postfix, 10 rounds each in forward and
// backward order by turns; the filter's CPU and the whole machine's per message; (d) peak RSS of the filter with 20 concurrent 25 MB messages.
// Needs smtp-source, smtp-sink and Postfix (Debian package postfix) and root. Loopback only, free
// ports; every process started is stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { postfixAvailable, startPostfix, type PostfixInstance } from '../test/support/postfix.js';
import { freePort, waitListening } from '../test/support/free-port.js';
import { bundleForNode } from '../test/support/bundle.js';
import { NODE_FLAGS } from '../src/cli/node-flags.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const N = Number(args.find((a) => /^\d+$/.test(a)) ?? 4000);
const SIZE = 20480;
const CONC = 10;
const RUNS = 5;
/** Pairs of rounds of the Postfix row (one round through each filter, ABBA order). */
const PF_PAIRS = Number(
  /^--pf-rounds=(\d+)$/.exec(args.find((a) => a.startsWith('--pf-rounds=')) ?? '')?.[1] ?? 10,
);
/**
 * --pf-reuse: the measured rounds of row (c) send every message of a session over one connection
 * (smtp-source -d), so Postfix opens one milter connection per session, not per message.
 */
const PF_REUSE = args.includes('--pf-reuse');
/** Messages each filter of the Postfix rows gets straight before it is measured (JIT warm-up). */
const PF_WARMUP = 3000;
/**
 * Then through Postfix itself: Postfix's mail takes paths the straight warm-up does not (XFORWARD,
 * its header fields, MAIL parameters), and with only 50 of them both filters still spent 12-14 %
 * of the measured CPU in V8's optimising compiler (perf); after 1,000, about 5 %.
 */
const PF_WARMUP_POSTFIX = 1000;
/** Rounds of the latency measurement (each: 1,000 messages through the proxy, then the relay). */
const LAT_ROUNDS = 5;
const CLK_TCK = 100;
const started = Date.now();
const cleanups: Array<() => Promise<void> | void> = [];
let cleaning: Promise<void> | undefined;
/** Stops everything started so far, once; a second caller waits for the same run. */
const runCleanups = () =>
  (cleaning ??= (async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  })());
// The filters run bundled for plain node, as the proxy of environment.md runs and as sandgate is
// shipped: no TypeScript loader in the measured processes (tsx adds CPU at load and ~35 MB RSS).
const child = bundleForNode(join(HERE, '_relay-child.ts'));
// Both filters run with the node flags sandgate's launchers use (src/cli/node-flags.ts), or with
// node's defaults under --node-defaults.
const nodeFlags = args.includes('--node-defaults') ? [] : NODE_FLAGS;
// Removed last, after every filter has stopped.
cleanups.push(() => child.remove());
// Interrupted: still stop the sink, Postfix and the filters (the filters also stop when their stdin closes).
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => void runCleanups().finally(() => process.exit(130)));
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}

/** CPU seconds of the whole machine (user, nice, system, irq, softirq; every core), from /proc/stat. */
function machineCpuS(): number {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return [0, 1, 2, 5, 6].reduce((sum, i) => sum + (f[i] ?? 0), 0) / CLK_TCK;
}

/** CPU seconds (user + system) and peak RSS (MB) of a process, from /proc. */
function procStats(pid: number): { cpuS: number; hwmMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuS = (Number(f[11]) + Number(f[12])) / CLK_TCK;
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuS, hwmMb: Number(hwm?.[1] ?? 0) / 1024 };
}

function stop(p: ChildProcess, how: () => void): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    how();
  });
}

interface Sink {
  readonly port: number;
  /** Messages received so far (smtp-sink -c counters). */
  count(): number;
  waitFor(n: number, timeoutMs: number): Promise<void>;
}

async function startSink(): Promise<Sink> {
  const port = await freePort();
  const p = spawn('smtp-sink', ['-u', 'nobody', '-c', `127.0.0.1:${port}`, '1024'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  cleanups.push(() => stop(p, () => p.kill()));
  let mesg = 0;
  let tail = '';
  const watchers = new Set<() => void>();
  p.stdout.on('data', (c: Buffer) => {
    tail = (tail + c.toString('latin1')).slice(-200);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    const last = all[all.length - 1];
    if (last) mesg = Number(last[1]);
    for (const w of watchers) w();
  });
  await waitListening(port);
  return {
    port,
    count: () => mesg,
    waitFor: (n, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (mesg < n) return;
          watchers.delete(check);
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`the sink got ${mesg} of ${n} messages in time`));
        }, timeoutMs);
        watchers.add(check);
        check();
      }),
  };
}

/** Garbage collections of a filter process so far (bench/_relay-child.ts answers "gc"). */
interface GcCounts {
  readonly minor: number;
  readonly major: number;
  readonly majorMs: number;
}

interface Filter {
  readonly kind: string;
  readonly port: number;
  readonly pid: number;
  gc(): Promise<GcCounts>;
  stop(): Promise<void>;
}

async function startFilter(kind: string, hopPort: number, listenPort = 0): Promise<Filter> {
  const state = mkdtempSync(join(tmpdir(), 'sg-bench-relay-'));
  const p = spawn(
    process.execPath,
    [...nodeFlags, child.file, kind, String(listenPort), String(hopPort), state],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const stopIt = once(async () => {
    await stop(p, () => p.stdin?.end());
    rmSync(state, { recursive: true, force: true });
  });
  cleanups.push(stopIt);
  const gcWaiters: Array<(c: GcCounts) => void> = [];
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    p.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        const ready = /^ready (\d+)$/.exec(line);
        if (ready) resolve(Number(ready[1]));
        const gc = /^gc (\d+) (\d+) ([\d.]+)$/.exec(line);
        if (gc) gcWaiters.shift()?.({ minor: Number(gc[1]), major: Number(gc[2]), majorMs: Number(gc[3]) });
      }
    });
    p.once('exit', (code) => reject(new Error(`${kind} exited with ${String(code)} before it was ready`)));
  });
  const gc = () =>
    new Promise<GcCounts>((resolve) => {
      gcWaiters.push(resolve);
      p.stdin?.write('gc\n');
    });
  return { kind, port, pid: p.pid as number, gc, stop: stopIt };
}

/** smtp-source against `port`; resolves with the wall time in seconds. */
async function source(
  port: number,
  o: { n: number; conc: number; size: number; reuse: boolean },
): Promise<number> {
  const t0 = process.hrtime.bigint();
  const p = spawn(
    'smtp-source',
    [
      '-4',
      ...(o.reuse ? ['-d'] : []),
      ...['-s', String(o.conc), '-m', String(o.n), '-l', String(o.size)],
      ...['-f', 'from@test.local', '-t', 'to@test.local', `127.0.0.1:${port}`],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  cleanups.push(() => stop(p, () => p.kill()));
  let err = '';
  p.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  if (code !== 0) throw new Error(`smtp-source failed (${String(code)}): ${err}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Throughput of one run: msg/s and the filter's CPU ms per message. */
async function throughput(
  f: Filter,
  o: { n: number; reuse: boolean },
): Promise<{ msgPerS: number; cpuMsPerMsg: number }> {
  const before = procStats(f.pid).cpuS;
  const secs = await source(f.port, { n: o.n, conc: CONC, size: SIZE, reuse: o.reuse });
  const cpu = procStats(f.pid).cpuS - before;
  return { msgPerS: o.n / secs, cpuMsPerMsg: (cpu * 1000) / o.n };
}

const LINE = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\r\n';
function message20k(i: number): string {
  const head =
    `From: <from@test.local>\r\nTo: <to@test.local>\r\nSubject: latency ${i}\r\n` +
    `Message-ID: <lat-${i}@test.local>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n`;
  return head + LINE.repeat(Math.ceil((SIZE - head.length) / LINE.length));
}

/**
 * Per-message latency (MAIL FROM sent -> reply to the final dot) over `conc` reused connections,
 * each sending its messages one after another, as smtp-source -d does. A minimal client of its own,
 * so that it measures nothing but the peer.
 */
async function latencies(port: number, total: number, conc: number): Promise<number[]> {
  const out: number[] = [];
  let next = 0;
  const one = async () => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    let buf = '';
    const waiting: Array<(code: number) => void> = [];
    sock.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line[3] !== '-') waiting.shift()?.(Number(line.slice(0, 3)));
      }
    });
    const reply = () => new Promise<number>((r) => waiting.push(r));
    const expect = async (want: number, what: string) => {
      const code = await reply();
      if (code !== want) throw new Error(`${what}: got ${code}, expected ${want}`);
    };
    await expect(220, 'greeting');
    sock.write('EHLO bench.test.local\r\n');
    await expect(250, 'EHLO');
    while (next < total) {
      const i = next++;
      const t0 = process.hrtime.bigint();
      sock.write('MAIL FROM:<from@test.local>\r\n');
      await expect(250, 'MAIL');
      sock.write('RCPT TO:<to@test.local>\r\n');
      await expect(250, 'RCPT');
      sock.write('DATA\r\n');
      await expect(354, 'DATA');
      sock.write(`${message20k(i)}.\r\n`);
      await expect(250, 'final dot');
      out.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    sock.write('QUIT\r\n');
    await reply();
    sock.destroy();
  };
  await Promise.all(Array.from({ length: conc }, one));
  return out;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const f0 = (x: number) => x.toFixed(0);
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);

const lines: string[] = [];
const say = (s = '') => {
  lines.push(s);
  console.log(s);
};

try {
  const sink = await startSink();
  const proxy = await startFilter('proxy', sink.port);
  const relay = await startFilter('relay', sink.port);
  say(
    `# relay benchmark, ${new Date().toISOString()}, ${N} x ${SIZE} B unless noted; both filters run as node ${nodeFlags.join(' ') || '(no flags)'}`,
  );
  say();

  if (!args.includes('--only-postfix')) {
    // (a) reused connections: warm both up (JIT, pools, caches), then interleave RUNS runs each.
    for (const f of [proxy, relay]) await source(f.port, { n: 1000, conc: CONC, size: SIZE, reuse: true });
    const runs: Record<string, Array<{ msgPerS: number; cpuMsPerMsg: number }>> = { proxy: [], relay: [] };
    for (let r = 0; r < RUNS; r++) {
      for (const f of [proxy, relay]) runs[f.kind]!.push(await throughput(f, { n: N, reuse: true }));
    }
    // Latency: LAT_ROUNDS interleaved rounds of 1,000 messages each; p50 and p99 are the medians of
    // the rounds' percentiles (one GC pause of the measuring client can make a single p99).
    // The filter's mark-compacts in each round: a mark-compact stalls every connection for several
    // ms at once, so a round with one has it in its p99.
    const lat: Record<string, { p50: number[]; p99: number[]; majors: number[] }> = {
      proxy: { p50: [], p99: [], majors: [] },
      relay: { p50: [], p99: [], majors: [] },
    };
    for (let r = 0; r < LAT_ROUNDS; r++) {
      for (const f of [proxy, relay]) {
        const gc0 = await f.gc();
        const l = (await latencies(f.port, 1000, CONC)).sort((a, b) => a - b);
        const gc1 = await f.gc();
        lat[f.kind]!.p50.push(pct(l, 50));
        lat[f.kind]!.p99.push(pct(l, 99));
        lat[f.kind]!.majors.push(gc1.major - gc0.major);
      }
    }
    const p = (k: string) => median(runs[k]!.map((x) => x.msgPerS));
    const c = (k: string) => median(runs[k]!.map((x) => x.cpuMsPerMsg));
    say(`## (a) 20 KB, concurrency ${CONC}, reused connections (smtp-source -d; median of ${RUNS} runs)`);
    say();
    say('| path | msg/s (runs) | vs proxy | filter CPU ms/msg | p50 ms | p99 ms | added p50 / p99 ms |');
    say('|---|---|---|---|---|---|---|');
    const p50 = (k: string) => median(lat[k]!.p50);
    const p99 = (k: string) => median(lat[k]!.p99);
    for (const k of ['proxy', 'relay']) {
      say(
        `| ${k === 'proxy' ? 'pass-through proxy' : 'sandgate relay (rules)'} | ${f0(p(k))} (${runs[k]!.map((x) => f0(x.msgPerS)).join(', ')}) | ` +
          `${f0((p(k) / p('proxy')) * 100)} % | ${f2(c(k))} | ${f1(p50(k))} | ${f1(p99(k))} | ` +
          `${k === 'proxy' ? '-' : `${f1(p50(k) - p50('proxy'))} / ${f1(p99(k) - p99('proxy'))}`} |`,
      );
    }
    say();
    // Machine load drifts between runs; each round's relay run is next to its proxy run.
    const paired = runs.relay!.map((x, i) => (x.msgPerS / runs.proxy![i]!.msgPerS) * 100);
    say(
      `Relay / proxy per round: ${paired.map((x) => `${f0(x)} %`).join(', ')} (median ${f0(median(paired))} %). ` +
        `p99 ms per latency round, proxy: ${lat.proxy!.p99.map(f1).join(', ')}; relay: ${lat.relay!.p99.map(f1).join(', ')}. ` +
        `Mark-compacts per latency round (1,000 messages), proxy: ${lat.proxy!.majors.join(', ')}; relay: ${lat.relay!.majors.join(', ')}.`,
    );
    say();

    // (b) a new connection per message; the untrusted relay keeps smtp-server's greeting pause.
    const untrusted = await startFilter('relay-untrusted', sink.port);
    const nNew = Math.min(N, 1000);
    const fresh: Array<[string, Filter, number]> = [
      ['pass-through proxy', proxy, Math.min(nNew, 500)],
      ['sandgate relay (rules), loopback trusted: no greeting pause', relay, nNew],
      ['sandgate relay (rules), peer not trusted: 100 ms greeting pause', untrusted, Math.min(nNew, 500)],
    ];
    say(`## (b) 20 KB, concurrency ${CONC}, a new connection per message (smtp-source without -d)`);
    say();
    say('| path | messages | msg/s | vs proxy | filter CPU ms/msg |');
    say('|---|---|---|---|---|');
    let proxyNew = 0;
    for (const [name, f, n] of fresh) {
      const t = await throughput(f, { n, reuse: false });
      if (f === proxy) proxyNew = t.msgPerS;
      say(
        `| ${name} | ${n} | ${f0(t.msgPerS)} | ${f0((t.msgPerS / proxyNew) * 100)} % | ${f2(t.cpuMsPerMsg)} |`,
      );
    }
    say();
    await untrusted.stop();
  }

  // (c) Postfix end to end (smtp-source start -> the sink has all N), four paths behind one
  // Postfix (an inbound smtpd each, one queue): Postfix alone; Postfix with the sandgate milter
  // (smtpd_milters, one pass); Postfix -> filter -> Postfix for the pass-through proxy and the
  // sandgate relay (content_filter, one scan transport, one re-injection listener). The filters are
  // warmed up once, then the paths take turns, forward and backward in alternate rounds (ABBA
  // generalised), so a drift of the machine's speed (its disk, another tenant) falls on all alike.
  if (!args.includes('--skip-postfix') && postfixAvailable()) {
    const nPf = Math.min(N, 1000);
    const taken = new Set<number>();
    const pick = async () => {
      let port = await freePort();
      while (taken.has(port)) port = await freePort();
      taken.add(port);
      return port;
    };
    const proxyPort = await pick();
    const relayPort = await pick();
    const milterPort = await pick();
    const protocolMilterPort = await pick();
    const pf: PostfixInstance = await startPostfix({
      filterPort: proxyPort,
      moreFilterPorts: [relayPort],
      milterPorts: [milterPort, protocolMilterPort],
      plain: true,
      relayhostPort: sink.port,
      // Each filter keeps up to 10 sessions to the re-injection smtpd open, the idle one too.
      reinjectProcesses: 20,
    });
    const stopPostfix = once(() => pf.stop());
    cleanups.push(stopPostfix);
    const filters = {
      proxy: await startFilter('proxy', pf.reinjectPort, proxyPort),
      relay: await startFilter('relay', pf.reinjectPort, relayPort),
      milter: await startFilter('milter', 0, milterPort),
      pmilter: await startFilter('protocol-milter', 0, protocolMilterPort),
    };
    type Kind = 'alone' | 'pmilter' | 'milter' | 'proxy' | 'relay';
    const wanted = /^--pf-paths=(.+)$/
      .exec(args.find((a) => a.startsWith('--pf-paths=')) ?? '')?.[1]
      ?.split(',');
    const KINDS = (['alone', 'pmilter', 'milter', 'proxy', 'relay'] as const).filter(
      (k) => wanted?.includes(k) ?? true,
    );
    const inPort: Record<Kind, number> = {
      alone: pf.plainPort!,
      milter: pf.inPortForMilter(milterPort),
      pmilter: pf.inPortForMilter(protocolMilterPort),
      proxy: pf.inPortFor(proxyPort),
      relay: pf.inPortFor(relayPort),
    };
    const NAMES: Record<Kind, string> = {
      alone: 'Postfix alone',
      pmilter: 'Postfix + protocol-only milter (no scan)',
      milter: 'Postfix + sandgate milter (rules)',
      proxy: 'Postfix -> pass-through proxy -> Postfix',
      relay: 'Postfix -> sandgate relay (rules) -> Postfix',
    };
    // Warm-up: 3,000 messages straight to each content filter (which hands them to Postfix's
    // re-injection port): the relay's JIT settles after about 3,000 messages (--trace-opt), as it
    // has in a long-running daemon. Then 1,000 through Postfix, the measured path; the milter has
    // no path but Postfix, so it gets the 3,000 and the 1,000 through Postfix.
    for (const kind of (['proxy', 'relay', 'milter', 'pmilter'] as const).filter((k) => KINDS.includes(k))) {
      const f = filters[kind];
      const have = sink.count();
      const isMilter = kind === 'milter' || kind === 'pmilter';
      const straight = isMilter ? 0 : PF_WARMUP;
      if (straight > 0) await source(f.port, { n: straight, conc: CONC, size: SIZE, reuse: true });
      const viaPostfix = isMilter ? PF_WARMUP + PF_WARMUP_POSTFIX : PF_WARMUP_POSTFIX;
      await source(inPort[kind], { n: viaPostfix, conc: CONC, size: SIZE, reuse: false });
      await sink.waitFor(have + straight + viaPostfix, 180_000);
    }
    say(
      `## (c) Postfix end to end (-> smtp-sink), ${nPf} x 20 KB a round, smtp-source -s ${CONC} (${PF_REUSE ? 'reused connections (-d)' : 'new connections'} to Postfix; ${PF_PAIRS} rounds of each path, in forward and backward order by turns)`,
    );
    say();
    say('| path | e2e msg/s: median (rounds) | vs Postfix alone | filter CPU ms/msg | machine CPU ms/msg |');
    say('|---|---|---|---|---|');
    const rates: Record<Kind, number[]> = { alone: [], pmilter: [], milter: [], proxy: [], relay: [] };
    const cpus: Record<Kind, number[]> = { alone: [], pmilter: [], milter: [], proxy: [], relay: [] };
    // Everything on the box per message (Postfix's processes, smtp-source, smtp-sink, the filter).
    const machine: Record<Kind, number[]> = { alone: [], pmilter: [], milter: [], proxy: [], relay: [] };
    const seconds: Record<Kind, number> = { alone: 0, pmilter: 0, milter: 0, proxy: 0, relay: 0 };
    for (let pair = 0; pair < PF_PAIRS; pair++) {
      const order = pair % 2 === 0 ? KINDS : [...KINDS].reverse();
      for (const kind of order) {
        const pid = kind === 'alone' ? undefined : filters[kind].pid;
        const have = sink.count();
        const cpu0 = pid === undefined ? 0 : procStats(pid).cpuS;
        const machine0 = machineCpuS();
        const t0 = process.hrtime.bigint();
        await source(inPort[kind], { n: nPf, conc: CONC, size: SIZE, reuse: PF_REUSE });
        await sink.waitFor(have + nPf, 120_000);
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        seconds[kind] += secs;
        rates[kind].push(nPf / secs);
        if (pid !== undefined) cpus[kind].push(((procStats(pid).cpuS - cpu0) * 1000) / nPf);
        machine[kind].push(((machineCpuS() - machine0) * 1000) / nPf);
      }
    }
    const base = median(rates.alone);
    for (const kind of KINDS) {
      say(
        `| ${NAMES[kind]} | ${f0(median(rates[kind]))} (${rates[kind].map(f0).join(', ')}) | ` +
          `${f0((median(rates[kind]) / base) * 100)} % | ${kind === 'alone' ? '-' : f2(median(cpus[kind]))} | ` +
          `${f2(median(machine[kind]))} |`,
      );
    }
    const paired = (a: Kind, b: Kind) =>
      rates[a].map((x, i) => (x / rates[b][i]!) * 100).sort((x, y) => x - y);
    const describePairs = (a: Kind, b: Kind, label: string) => {
      const r = paired(a, b);
      return (
        `${label} per pair of rounds, sorted: ${r.map((x) => `${f0(x)} %`).join(', ')} ` +
        `(median ${f0(median(r))} %, middle half ${f0(pct(r, 25))}-${f0(pct(r, 75))} %). ` +
        `All rounds together: ${f0((seconds[b] / seconds[a]) * 100)} % ` +
        `(${PF_PAIRS * nPf} messages each; ${f1(seconds[b])} s ${NAMES[b]}, ${f1(seconds[a])} s ${NAMES[a]}).`
      );
    };
    say();
    const pairs: Array<[Kind, Kind, string]> = [
      ['milter', 'alone', 'Milter / Postfix alone'],
      ['pmilter', 'alone', 'Protocol-only milter / Postfix alone'],
      ['milter', 'pmilter', 'Milter / protocol-only milter'],
      ['relay', 'proxy', 'Relay / proxy'],
      ['relay', 'alone', 'Relay path / Postfix alone'],
    ];
    for (const [a, b, label] of pairs) {
      if (!KINDS.includes(a) || !KINDS.includes(b)) continue;
      say(describePairs(a, b, label));
      say();
    }
    await filters.milter.stop();
    await filters.pmilter.stop();
    await filters.relay.stop();
    await filters.proxy.stop();
    await stopPostfix();
  } else {
    say('## (c) Postfix rows skipped (--skip-postfix, or no Postfix/root here)');
    say();
  }

  // (d) peak RSS with 20 concurrent 25 MB messages, in fresh filter processes.
  if (!args.includes('--skip-rss')) {
    await proxy.stop();
    await relay.stop();
    const big = 25 * 1024 * 1024;
    say(`## (d) peak RSS, 20 concurrent 25 MB messages (smtp-source -s 20 -m 20 -l ${big})`);
    say();
    say('| path | peak RSS MB (VmHWM) | wall s |');
    say('|---|---|---|');
    for (const kind of ['proxy', 'relay']) {
      const f = await startFilter(kind, sink.port);
      const secs = await source(f.port, { n: 20, conc: 20, size: big, reuse: false });
      const { hwmMb } = procStats(f.pid);
      say(
        `| ${kind === 'proxy' ? 'pass-through proxy' : 'sandgate relay (rules)'} | ${f0(hwmMb)} | ${f1(secs)} |`,
      );
      await f.stop();
    }
    say();
  }
  say(`(bench wall time ${f0((Date.now() - started) / 1000)} s)`);
} finally {
  await runCleanups();
}
mkdirSync(join(HERE, 'results'), { recursive: true });
writeFileSync(join(HERE, 'results', 'relay.md'), `${lines.join('\n')}\n`);
