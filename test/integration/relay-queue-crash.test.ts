import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import { SANDGATE_BIN } from '../support/cli.js';
import { mail, messageNumber, NextHopGate, Sender } from '../support/relay-queue.js';

const N = 1000;
const CLIENTS = 10;
const QUEUE_CONCURRENCY = 10;
const KILLS = 3;

/** `sandgate relay` in queue mode as a child process; ready once it logs relay.listening. */
class RelayChild {
  readonly ready: Promise<number>;
  readonly exited: Promise<void>;
  private readonly child: ChildProcess;
  stderr = '';

  constructor(config: string) {
    this.child = spawn(process.execPath, [SANDGATE_BIN, 'relay', '--config', config], {
      env: { PATH: process.env.PATH ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    this.ready = new Promise((resolve, reject) => {
      const lines = createInterface({ input: this.child.stdout! });
      lines.on('line', (line) => {
        if (!line.includes('"relay.listening"')) return;
        resolve((JSON.parse(line) as { port: number }).port);
      });
      this.child.once('exit', (code) => reject(new Error(`relay exited (${String(code)}): ${this.stderr}`)));
    });
    this.ready.catch(() => undefined);
  }

  kill(signal: NodeJS.Signals): Promise<void> {
    this.child.kill(signal);
    return this.exited;
  }
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('relay queue mode under kill -9', () => {
  it(`${N} messages, relay process killed with SIGKILL ${KILLS} times at random moments: every 250 arrives at least once, duplicates only for messages in flight`, async () => {
    if (!existsSync(SANDGATE_BIN)) throw new Error(`${SANDGATE_BIN} is missing: run "npm run build" first`);
    const stateDir = mkdtempSync(join(tmpdir(), 'sg-queue-crash-'));
    dirs.push(stateDir);
    const sink = await startSmtpSink();
    // The sink is reached through a gate whose sockets handle the resets a killed relay leaves
    // behind (the sink's server has no 'error' listener of its own).
    const gate = await NextHopGate.start(sink.port);
    gate.up = true;
    const config = join(stateDir, 'sandgate.yaml');
    writeFileSync(
      config,
      [
        `stateDir: ${stateDir}`,
        'log: { level: info }',
        'scan: { chain: [rules] }',
        'relay:',
        '  listen: 127.0.0.1:0',
        '  mode: queue',
        `  nextHop: smtp://127.0.0.1:${gate.port}`,
        '  nextHopOptions: { tls: none }',
        '  shutdownTimeout: 5s',
        `  queue: { retryMin: 100ms, retryMax: 1s, concurrency: ${QUEUE_CONCURRENCY} }`,
        '',
      ].join('\n'),
    );

    let relay = new RelayChild(config);
    let next = 0;
    let accepted = 0;
    /** Client transactions between MAIL and the reply to the dot, right now. */
    let clientInFlight = 0;
    const inFlightAtKills: number[] = [];
    const killAt = Array.from({ length: KILLS }, () => 100 + Math.floor(Math.random() * (N - 200))).sort(
      (a, b) => a - b,
    );
    let restarting: Promise<void> | undefined;

    const killAndRestart = async () => {
      // A random moment a few milliseconds after the threshold, while clients and deliveries run.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20)));
      inFlightAtKills.push(clientInFlight);
      await relay.kill('SIGKILL');
      relay = new RelayChild(config);
      await relay.ready;
    };

    const client = async () => {
      let sender: Sender | undefined;
      for (;;) {
        const id = next++;
        if (id >= N) break;
        for (;;) {
          if (restarting) await restarting;
          try {
            sender ??= await Sender.open(await relay.ready);
            clientInFlight++;
            let code: number | undefined;
            try {
              code = (await sender.send('load@example.test', ['sink@example.test'], mail(id))).data?.code;
            } finally {
              clientInFlight--;
            }
            if (code === 250) break;
            await new Promise((r) => setTimeout(r, 20)); // 4xx: try again, as an MTA would
          } catch {
            sender = undefined; // the relay died under us: reconnect to the next one
            await new Promise((r) => setTimeout(r, 10));
          }
        }
        accepted++;
        if (killAt.length > 0 && accepted >= (killAt[0] ?? N)) {
          killAt.shift();
          restarting = killAndRestart().finally(() => {
            restarting = undefined;
          });
        }
      }
      await sender?.close().catch(() => undefined);
    };

    await Promise.all(Array.from({ length: CLIENTS }, client));
    if (restarting) await restarting;
    expect(accepted).toBe(N);

    // Let the queue drain, then stop gracefully.
    const state = openSqliteState(stateDir);
    try {
      const store = state.relayQueue;
      for (let i = 0; (await store.stats()).messages > 0; i++) {
        if (i > 400) throw new Error(`queue did not drain: ${(await store.stats()).messages} left`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await state.close();
    }
    await relay.kill('SIGTERM');

    const counts = new Map<string, number>();
    for (const m of sink.messages) {
      const n = messageNumber(m.bytes) ?? '?';
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    const missing = Array.from({ length: N }, (_, i) => String(i)).filter((i) => !counts.has(i));
    const duplicates = sink.messages.length - counts.size;
    const bound = inFlightAtKills.reduce((s, n) => s + n + QUEUE_CONCURRENCY, 0);
    console.log(
      `relay queue kill -9: ${N} messages, ${inFlightAtKills.length} kills (client transactions in flight at each: ${inFlightAtKills.join(', ')}), ` +
        `${sink.messages.length} deliveries, ${duplicates} duplicate(s) (bound: ${bound})`,
    );
    expect(missing).toEqual([]);
    expect(counts.has('?')).toBe(false);
    expect(inFlightAtKills).toHaveLength(KILLS);
    expect(duplicates).toBeLessThanOrEqual(bound);
    expect(readdirSync(join(stateDir, 'queue'))).toEqual([]);
    await gate.close();
    await sink.close();
  }, 60_000);
});
