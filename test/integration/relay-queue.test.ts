import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runSandgate } from '../support/cli.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import type { RelayQueueStore } from '../../src/core/ports.js';
import { EICAR } from '../support/relay.js';
import { LogCapture } from '../support/runtime.js';
import {
  mail,
  messageNumber,
  NextHopGate,
  sendOne,
  Sender,
  startQueueRelay,
  type QueueRelay,
} from '../support/relay-queue.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A temporary directory removed after everything else this test started has stopped. */
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.unshift(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function setup(options: Parameters<typeof startQueueRelay>[2] = {}, dir?: string) {
  const stateDir = dir ?? tempDir('sg-queue-');
  const sink = await startSmtpSink();
  cleanups.push(() => sink.close());
  const gate = await NextHopGate.start(sink.port);
  cleanups.push(() => gate.close());
  const q = await startQueueRelay(stateDir, gate.hop, options);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await q.close();
  };
  cleanups.push(close);
  return { stateDir, sink, gate, q, close };
}

/** Polls a condition (state we do not get an event for). */
async function until(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves after `n` worker outcomes of the given kind. */
function outcomes(q: QueueRelay, kind: string, n: number): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    const on = (e: { outcome: string }) => {
      if (e.outcome === kind && ++seen >= n) {
        q.mode.worker.off('outcome', on);
        resolve();
      }
    };
    q.mode.worker.on('outcome', on);
  });
}

function queueFiles(stateDir: string): string[] {
  return readdirSync(join(stateDir, 'queue'));
}

function countBy(sink: SmtpSink): Map<string, number> {
  const m = new Map<string, number>();
  for (const msg of sink.messages) {
    const n = messageNumber(msg.bytes) ?? '?';
    m.set(n, (m.get(n) ?? 0) + 1);
  }
  return m;
}

describe('relay queue mode', { timeout: 20_000 }, () => {
  it('next hop down for a while (connections dropped, then 451 at the dot), then up: every message delivered exactly once', async () => {
    const { stateDir, sink, gate, q } = await setup();
    const sender = await Sender.open(q.port);
    const N = 30;
    for (let i = 0; i < N; i++) {
      const r = await sender.send('alice@example.test', ['bob@example.test', 'carol@example.test'], mail(i));
      expect(r.data?.code).toBe(250);
    }
    await sender.close();
    expect((await q.mode.store.stats()).messages).toBe(N);
    // Down: tried again and again with a growing delay (deliveries pause while it is down).
    await until(() => gate.connections >= 4);
    expect(sink.messages).toHaveLength(0);
    // Up, but the next hop answers 451 at the final dot: every message deferred, none accepted.
    sink.behaviour.refuseData = [451, '4.3.0 try later'];
    const refused = outcomes(q, 'deferred', N);
    gate.up = true;
    await refused;
    expect(sink.messages).toHaveLength(0);
    sink.behaviour.refuseData = undefined;
    await q.mode.worker.idle();
    const counts = countBy(sink);
    expect(counts.size).toBe(N);
    for (let i = 0; i < N; i++) expect(counts.get(String(i))).toBe(1);
    // Original envelope, our verdict header added.
    const first = sink.messages[0];
    expect(first?.sender).toBe('alice@example.test');
    expect(first?.recipients).toEqual(['bob@example.test', 'carol@example.test']);
    expect(first?.bytes.toString()).toMatch(/^X-Sandgate-Verdict: clean\r\n/);
    expect(queueFiles(stateDir)).toEqual([]);
    expect((await q.mode.store.stats()).messages).toBe(0);
  });

  it('a look at the queue that fails (the state unreachable) is logged and tried again; the message is still delivered', async () => {
    let failures = 0;
    const logs = new LogCapture();
    const { sink, gate, q } = await setup({
      log: logs.logger,
      wrapStore: (store) =>
        new Proxy(store, {
          get(target, prop) {
            if (prop === 'due') {
              return (...args: Parameters<RelayQueueStore['due']>) =>
                failures-- > 0 ? Promise.reject(new Error('state unreachable')) : target.due(...args);
            }
            const value: unknown = Reflect.get(target, prop, target);
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        }),
    });
    gate.up = true;
    failures = 2;
    const delivered = outcomes(q, 'delivered', 1);
    expect((await sendOne(q.port, 'alice@example.test', ['bob@example.test'], mail(1))).data?.code).toBe(250);
    await delivered;
    expect(sink.messages.map((m) => messageNumber(m.bytes))).toEqual(['1']);
    const failed = logs.events('queue.pump_failed');
    expect(failed).toHaveLength(2);
    expect(failed[0]).toMatchObject({ level: 50, err: 'state unreachable' });
  });

  it('per-recipient results: a 5xx recipient is not resent and gets a DSN, a 4xx recipient is retried alone', async () => {
    const { sink, gate, q } = await setup();
    gate.up = true;
    sink.behaviour.refuseRecipients.set('gone@example.test', [550, '5.1.1 no such user']);
    sink.behaviour.refuseRecipients.set('later@example.test', [450, '4.2.1 mailbox busy']);
    const r = await sendOne(
      q.port,
      'alice@example.test',
      ['ok@example.test', 'gone@example.test', 'later@example.test'],
      mail('pr'),
    );
    expect(r.data?.code).toBe(250);
    await outcomes(q, 'deferred', 1);
    sink.behaviour.refuseRecipients.delete('later@example.test');
    await q.mode.worker.idle();

    const originals = sink.messages.filter((m) => m.sender === 'alice@example.test');
    expect(originals.map((m) => m.recipients)).toEqual([['ok@example.test'], ['later@example.test']]);
    // RCPT log: the first attempt tried all three, every retry only the one still pending.
    const retries = sink.rcptLog.slice(3);
    expect(retries.length).toBeGreaterThan(0);
    expect(new Set(retries.filter((a) => a !== 'alice@example.test'))).toEqual(
      new Set(['later@example.test']),
    );

    const dsns = sink.messages.filter((m) => m.sender === '');
    expect(dsns).toHaveLength(1);
    const dsn = dsns[0]!;
    expect(dsn.recipients).toEqual(['alice@example.test']);
    const text = dsn.bytes.toString('latin1');
    expect(text).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status;/m);
    expect(text).toMatch(/^Content-Type: message\/delivery-status/m);
    expect(text).toMatch(/^Final-Recipient: rfc822; gone@example\.test\r$/m);
    expect(text).toMatch(/^Action: failed\r$/m);
    expect(text).toMatch(/^Status: 5\.1\.1\r$/m);
    expect(text).toMatch(/^Diagnostic-Code: smtp; 550 5\.1\.1 no such user/m);
    expect(text).toMatch(/^Content-Type: text\/rfc822-headers/m);
    expect(text).toContain('Message-ID: <pr@queue.test>');
    expect(text).not.toContain('Body of message pr');
    expect(text).not.toMatch(/Final-Recipient: rfc822; (ok|later)@/);
  });

  it('a permanent 5xx for mail from the null sender gets no DSN', async () => {
    const { sink, gate, q } = await setup();
    gate.up = true;
    sink.behaviour.refuseData = [554, '5.7.1 content refused'];
    const failed = outcomes(q, 'failed', 1);
    const r = await sendOne(q.port, '', ['bob@example.test'], mail('null'));
    expect(r.data?.code).toBe(250);
    await failed;
    await q.mode.worker.idle();
    expect(sink.messages).toHaveLength(0);
    sink.behaviour.refuseData = undefined;
    // And a real sender with the same refusal does get one (the DSN arrives once the sink accepts again).
    sink.behaviour.refuseData = [554, '5.7.1 content refused'];
    const bounced = outcomes(q, 'bounced', 1);
    await sendOne(q.port, 'alice@example.test', ['bob@example.test'], mail('real'));
    await bounced;
    sink.behaviour.refuseData = undefined;
    await q.mode.worker.idle();
    expect(sink.messages.map((m) => [m.sender, m.recipients])).toEqual([['', ['alice@example.test']]]);
  });

  it('blocked mail (reject) goes to the quarantine: no bounce, nothing delivered, queue entry removed', async () => {
    const { stateDir, sink, gate, q } = await setup();
    gate.up = true;
    const r = await sendOne(
      q.port,
      'forged@example.test',
      ['bob@example.test'],
      mail('eicar', '') + EICAR + '\r\n',
    );
    expect(r.data?.code).toBe(250);
    const queuedId = /queued as (\S+)/.exec(r.data?.lines.join(' ') ?? '')?.[1];
    expect(queuedId).toBeDefined();
    await q.mode.worker.idle();
    expect(sink.messages).toHaveLength(0);
    const items = await q.quarantine.list({});
    expect(items.map((i) => [i.msgId, i.action, i.envelope.sender])).toEqual([
      [queuedId, 'reject', 'forged@example.test'],
    ]);
    expect(queueFiles(stateDir)).toEqual([]);
  });

  it('back-pressure: past relay.queue.maxMessages RCPT gets 452, DATA never starts; delivered mail makes room', async () => {
    const { gate, q } = await setup({ queue: { maxMessages: 3 } });
    const s = await Sender.open(q.port);
    for (let i = 0; i < 3; i++)
      expect((await s.send('a@example.test', ['b@example.test'], mail(i))).data?.code).toBe(250);
    const full = await s.send('a@example.test', ['b@example.test'], mail(3));
    expect(full.rcpts.map((r) => [r.code, r.enhanced])).toEqual([[452, '4.3.1']]);
    expect(full.data).toBeUndefined();
    gate.up = true;
    await q.mode.worker.idle();
    expect((await s.send('a@example.test', ['b@example.test'], mail(3))).data?.code).toBe(250);
    await s.close();
  });

  it('back-pressure: past relay.queue.maxBytes RCPT gets 452', async () => {
    const { q } = await setup({ queue: { maxBytes: 2000 } });
    const s = await Sender.open(q.port);
    const big = mail('big', `X-Pad: ${'x'.repeat(1500)}\r\n`);
    expect((await s.send('a@example.test', ['b@example.test'], big)).data?.code).toBe(250);
    // Below the limit when it started: accepted, and now the queue is past it.
    expect((await s.send('a@example.test', ['b@example.test'], big)).data?.code).toBe(250);
    const full = await s.send('a@example.test', ['b@example.test'], big);
    expect(full.rcpts.map((r) => [r.code, r.enhanced])).toEqual([[452, '4.3.1']]);
    expect((await q.mode.store.stats()).messages).toBe(2);
    await s.close();
  });

  it('disk full (a tiny tmpfs mounted as the queue directory): 451, nothing accepted, no partial file', async (ctx) => {
    const stateDir = tempDir('sg-queue-full-');
    const qdir = join(stateDir, 'queue');
    mkdirSync(qdir, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', qdir], { stdio: 'ignore' });
    } catch {
      ctx.skip('cannot mount a tmpfs here (not root?); the unwritable-directory test below still runs');
    }
    cleanups.push(() => {
      execFileSync('umount', [qdir], { stdio: 'ignore' });
    });
    const { q } = await setup({}, stateDir);
    const s = await Sender.open(q.port);
    expect((await s.send('a@example.test', ['b@example.test'], mail('small'))).data?.code).toBe(250);
    const r = await s.send(
      'a@example.test',
      ['b@example.test'],
      mail('huge', `X-Pad: ${'y'.repeat(200_000)}\r\n`),
    );
    expect([r.data?.code, r.data?.enhanced]).toEqual([451, '4.3.0']);
    expect((await q.mode.store.stats()).messages).toBe(1);
    expect(queueFiles(stateDir).filter((f) => f.endsWith('.partial'))).toEqual([]);
    // The session goes on, and a message that fits is still accepted.
    expect((await s.send('a@example.test', ['b@example.test'], mail('small2'))).data?.code).toBe(250);
    await s.close();
  });

  it('queue directory unwritable (a regular file where the directory must be): 451, nothing accepted', async () => {
    const { stateDir, q } = await setup();
    const qdir = join(stateDir, 'queue');
    rmSync(qdir, { recursive: true });
    writeFileSync(qdir, 'not a directory');
    const r = await sendOne(q.port, 'a@example.test', ['b@example.test'], mail('nodir'));
    expect([r.data?.code, r.data?.enhanced]).toEqual([451, '4.3.0']);
    expect((await q.mode.store.stats()).messages).toBe(0);
  });

  it('restart resumes the queue; depth and oldest age are on the metrics registry; graceful stop leaves items intact', async () => {
    const stateDir = tempDir('sg-queue-restart-');
    const first = await setup({}, stateDir);
    for (let i = 0; i < 5; i++) {
      expect((await sendOne(first.q.port, 'a@example.test', ['b@example.test'], mail(i))).data?.code).toBe(
        250,
      );
    }
    await outcomes(first.q, 'deferred', 5);
    const metrics = await first.q.metrics.registry.metrics();
    expect(metrics).toMatch(/^sandgate_relay_queue_messages 5$/m);
    expect(Number(/^sandgate_relay_queue_oldest_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    await first.close();
    expect(queueFiles(stateDir)).toHaveLength(5);

    const sink = await startSmtpSink();
    cleanups.push(() => sink.close());
    const second = await startQueueRelay(stateDir, { kind: 'smtp', host: '127.0.0.1', port: sink.port });
    cleanups.push(() => second.close());
    await second.mode.worker.idle();
    const counts = countBy(sink);
    expect([...counts.keys()].sort()).toEqual(['0', '1', '2', '3', '4']);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    expect(await second.metrics.registry.metrics()).toMatch(/^sandgate_relay_queue_messages 0$/m);
  });

  it('sandgate queue list | show | retry | delete (built CLI)', async () => {
    const { stateDir, q, close } = await setup();
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await sendOne(q.port, 'a@example.test', ['b@example.test', 'c@example.test'], mail(i));
      ids.push(/queued as (\S+)/.exec(r.data?.lines.join(' ') ?? '')?.[1] ?? '');
    }
    await outcomes(q, 'deferred', 2);
    await close();
    const cfg = join(stateDir, 'cli.yaml');
    writeFileSync(cfg, `stateDir: ${stateDir}\nrelay:\n  mode: queue\n`);
    const listed = async () => {
      const list = await runSandgate(['queue', 'list', '--json', '--config', cfg]);
      expect(list.code).toBe(0);
      return JSON.parse(list.stdout) as Array<{
        id: string;
        pending: number;
        attempts: number;
        nextAttemptAt: string;
      }>;
    };
    const items = await listed();
    expect(items.map((i) => i.id).sort()).toEqual([...ids].sort());
    expect(items.every((i) => i.pending === 2 && i.attempts >= 1)).toBe(true);
    const show = await runSandgate(['queue', 'show', ids[0]!, '--config', cfg]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/pending\s+b@example\.test/);
    const before = Date.now();
    expect((await runSandgate(['queue', 'retry', ids[0]!, '--config', cfg])).code).toBe(0);
    const retried = (await listed()).find((i) => i.id === ids[0]);
    expect(retried?.attempts).toBe(0);
    expect(Date.parse(retried?.nextAttemptAt ?? '')).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(retried?.nextAttemptAt ?? '')).toBeGreaterThanOrEqual(before - 1000);
    expect((await runSandgate(['queue', 'delete', ids[1]!, '--config', cfg])).code).toBe(0);
    expect((await listed()).map((i) => i.id)).toEqual([ids[0]]);
    expect(queueFiles(stateDir)).toEqual([`${ids[0]!}.msg`]);
    const missing = await runSandgate(['queue', 'show', 'sg-nope', '--config', cfg]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('[ERR_QUEUE_NOT_FOUND]');
  });
});
