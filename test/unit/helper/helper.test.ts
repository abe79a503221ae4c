import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EvaluateOptions, Evaluation, Evaluator } from '../../../src/core/evaluation.js';
import { silentLogger, type Logger } from '../../../src/core/logger.js';
import type { MessageSource } from '../../../src/core/message.js';
import type { Decision } from '../../../src/core/policy.js';
import { HelperSession } from '../../../src/helper/helper.js';
import type { HelperSettings } from '../../../src/helper/settings.js';
import { DEFAULT_REPLY_SETTINGS } from '../../../src/helper/replies.js';

/** An evaluator the test answers by hand: each call waits until the test resolves it. */
class ManualEvaluator implements Evaluator {
  readonly calls: Array<{
    message: MessageSource;
    options: EvaluateOptions;
    resolve: (d: Partial<Decision>) => void;
    reject: (e: Error) => void;
  }> = [];
  private waiters: Array<() => void> = [];

  evaluate(message: MessageSource, options: EvaluateOptions): Promise<Evaluation> {
    return new Promise((resolve, reject) => {
      this.calls.push({
        message,
        options,
        reject,
        resolve: (d) =>
          resolve({
            msgId: message.msgId,
            decision: {
              action: 'deliver',
              keepCopy: false,
              verdict: 'clean',
              reason: 'clean',
              threats: [],
              failOpen: false,
              ...d,
            },
            outcomes: [],
            contentKey: 'k',
            headers: [],
            stripHeaders: [],
            alreadyJudged: false,
            ms: 0,
          }),
      });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitForCalls(n: number): Promise<void> {
    while (this.calls.length < n) await new Promise<void>((r) => this.waiters.push(r));
  }

  /**
   * The call for the queue file whose message has this Subject. Requests read their queue files
   * concurrently, so calls arrive in no fixed order.
   */
  async callFor(subject: string): Promise<ManualEvaluator['calls'][number]> {
    for (const call of this.calls) {
      let text = '';
      for await (const c of call.message.open()) text += (c as Buffer).toString('latin1');
      if (text.includes(`Subject: ${subject}\n`)) return call;
    }
    throw new Error(`no evaluation for a message with Subject: ${subject}`);
  }
}

/** Records log lines so tests can assert on events. */
function recordingLogger(events: Array<Record<string, unknown>>): Logger {
  const log = (obj: Record<string, unknown>) => void events.push(obj);
  const l: Logger = { trace: log, debug: log, info: log, warn: log, error: log, fatal: log, child: () => l };
  return l;
}

class Peer {
  readonly input = new PassThrough();
  readonly output = new PassThrough();
  readonly lines: string[] = [];
  private buf = '';
  private waiters: Array<() => void> = [];

  constructor() {
    this.output.on('data', (c: Buffer) => {
      this.buf += c.toString('utf8');
      let i;
      while ((i = this.buf.indexOf('\n')) !== -1) {
        this.lines.push(this.buf.slice(0, i));
        this.buf = this.buf.slice(i + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  send(...lines: string[]): void {
    this.input.write(lines.map((l) => `${l}\n`).join(''));
  }
  replies(): string[] {
    return this.lines.filter((l) => !l.startsWith('* '));
  }
  async reply(seq: string): Promise<string> {
    for (;;) {
      const hit = this.lines.find((l) => l.startsWith(`${seq} `));
      if (hit !== undefined) return hit;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
  async waitLines(n: number): Promise<void> {
    while (this.replies().length < n) await new Promise<void>((r) => this.waiters.push(r));
  }
}

let base: string;
/** A queue file; its Subject tells the tests which request an evaluation belongs to. */
const msg = (subject: string) =>
  `P I 01-01-2024 00:00:00 0000 ____ ____ <a@x.test>\nR W 01-01-2024 00:00:00 0000 ____ _FY_ <b@y.test>\nS SMTP [10.0.0.1]\n\nSubject: ${subject}\n\nbody\n`;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'sg-helper-unit-'));
  mkdirSync(join(base, 'Queue', '57'), { recursive: true });
  for (let i = 1; i <= 5; i++) writeFileSync(join(base, 'Queue', `${i}.msg`), msg(`t${i}`));
  writeFileSync(join(base, 'Queue', '57', '9.msg'), msg('t9'));
  writeFileSync(join(base, 'Queue', 'bad.msg'), 'no envelope here\nat all\n');
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

function settings(extra: Partial<HelperSettings> = {}): HelperSettings {
  return {
    baseDir: base,
    deadlineMs: 10_000,
    concurrency: 8,
    maxLineLength: 4096,
    maxProtocolVersion: 4,
    replies: DEFAULT_REPLY_SETTINGS,
    ...extra,
  };
}

function session(
  peer: Peer,
  evaluator: Evaluator | undefined,
  extra: Partial<HelperSettings> = {},
  log: Logger = silentLogger,
) {
  const s = new HelperSession({
    input: peer.input,
    output: peer.output,
    settings: settings(extra),
    core: evaluator !== undefined ? { evaluator } : { brokenReason: 'ERR_CONFIG_INVALID: scan.chain: bad' },
    log,
    notices: ['sandgate helper test started'],
  });
  return s.start();
}

describe('HelperSession', () => {
  it('negotiates INTF, answers KEY and unknown commands, ignores junk, quits', async () => {
    const peer = new Peer();
    const events: Array<Record<string, unknown>> = [];
    const done = session(peer, new ManualEvaluator(), {}, recordingLogger(events));
    peer.send(
      '00001 INTF 5',
      '2 INTF 3',
      '3 INTF',
      'garbage without number',
      '',
      '4 KEY abc',
      '5 FROB x',
      // Too long: with a number it is answered (tempfail, by its number); without, it is junk.
      `6 FILE ${'x'.repeat(5000)}`,
      `FILE ${'x'.repeat(5000)}`,
      '7 QUIT',
    );
    const result = await done;
    expect(peer.lines[0]).toBe('* sandgate helper test started');
    expect(peer.replies()).toEqual([
      '00001 INTF 4',
      '2 INTF 3',
      '3 INTF 4',
      '4 OK',
      '5 ERROR "unsupported command"',
      '6 REJECTED "sandgate: not scanned yet (line-too-long), will retry"',
      '7 OK',
    ]);
    expect(result).toEqual({ reason: 'quit', answered: 0, abandoned: 0 });
    expect(events.filter((e) => e.event === 'helper.junk_line').map((e) => e.reason)).toEqual([
      'no-sequence',
      'too-long',
    ]);
    expect(events.filter((e) => e.event === 'helper.line_too_long')).toEqual([
      expect.objectContaining({ seq: '6', bytes: 5007 }),
    ]);
  });

  it('evaluates FILE requests concurrently and answers in the order verdicts come', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const done = session(peer, ev);
    peer.send('1 FILE Queue/1.msg', '2 FILE Queue/2.msg', '3 FILE Queue/57/9.msg');
    await ev.waitForCalls(3);
    expect(ev.calls.map((c) => c.message.envelope.recipients)).toEqual([
      ['b@y.test'],
      ['b@y.test'],
      ['b@y.test'],
    ]);
    (await ev.callFor('t9')).resolve({
      action: 'reject',
      keepCopy: false,
      verdict: 'malicious',
      threats: ['EICAR'],
    });
    expect(await peer.reply('3')).toBe('3 DISCARD');
    (await ev.callFor('t1')).resolve({});
    expect(await peer.reply('1')).toBe('1 OK');
    (await ev.callFor('t2')).resolve({
      action: 'tempfail',
      verdict: 'unscanned',
      reason: 'failure:unavailable',
    });
    expect(await peer.reply('2')).toBe(
      '2 REJECTED "sandgate: not scanned yet (failure:unavailable), will retry"',
    );
    expect(peer.replies()).toEqual([
      '3 DISCARD',
      '1 OK',
      '2 REJECTED "sandgate: not scanned yet (failure:unavailable), will retry"',
    ]);
    peer.input.end();
    expect(await done).toEqual({ reason: 'eof', answered: 3, abandoned: 0 });
  });

  it('passes the evaluator a deadline inside the request budget and the message bytes after the envelope', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const before = Date.now();
    const done = session(peer, ev, { deadlineMs: 2000 });
    peer.send('1 FILE Queue/1.msg');
    await ev.waitForCalls(1);
    const call = ev.calls[0]!;
    expect(call.options.deadline).toBeGreaterThanOrEqual(before + 2000 - 250);
    expect(call.options.deadline).toBeLessThan(Date.now() + 2000);
    const parts: Buffer[] = [];
    for await (const c of call.message.open()) parts.push(c as Buffer);
    expect(Buffer.concat(parts).toString()).toBe('Subject: t1\n\nbody\n');
    call.resolve({});
    peer.input.end();
    await done;
  });

  it('caps concurrent evaluations and queues the rest in order', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const done = session(peer, ev, { concurrency: 2 });
    peer.send('1 FILE Queue/1.msg', '2 FILE Queue/2.msg', '3 FILE Queue/3.msg', '4 FILE Queue/4.msg');
    await ev.waitForCalls(2);
    await new Promise((r) => setImmediate(r));
    expect(ev.calls).toHaveLength(2);
    ev.calls[1]!.resolve({});
    await ev.waitForCalls(3);
    expect(ev.calls[2]!.message.msgId).not.toBe(ev.calls[1]!.message.msgId);
    ev.calls[0]!.resolve({});
    await ev.waitForCalls(4);
    ev.calls[2]!.resolve({});
    ev.calls[3]!.resolve({});
    peer.input.end();
    await done;
    expect(peer.replies().sort()).toEqual(['1 OK', '2 OK', '3 OK', '4 OK']);
  });

  it('answers the tempfail reply at the deadline, once, for running and queued requests', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const events: Array<Record<string, unknown>> = [];
    const started = Date.now();
    const done = session(peer, ev, { deadlineMs: 300, concurrency: 1 }, recordingLogger(events));
    peer.send('1 FILE Queue/1.msg', '2 FILE Queue/2.msg');
    await peer.waitLines(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    // One deadline per request: the second, still waiting for the one slot, is answered at it; the
    // first was given the same deadline by the core, which here never answers, so the session
    // answers it at the end of the reply margin.
    expect(peer.replies()).toEqual([
      '2 REJECTED "sandgate: not scanned yet (deadline), will retry"',
      '1 REJECTED "sandgate: not scanned yet (deadline), will retry"',
    ]);
    expect(events.filter((e) => e.event === 'helper.deadline').map((e) => e.state)).toEqual([
      'queued',
      'running',
    ]);
    expect(ev.calls).toHaveLength(1);
    // The core's deadline is the request's: helper.deadline after the FILE line, less the reply margin.
    const deadline = ev.calls[0]!.options.deadline;
    expect(deadline).toBeGreaterThanOrEqual(started + 300 - 30);
    expect(deadline).toBeLessThanOrEqual(Date.now() - 30);
    // The late verdict is not sent: exactly one final reply per request; the evaluation is not aborted
    // (the core may keep a sandbox task going for the retry).
    expect(ev.calls[0]!.options.signal?.aborted).toBe(false);
    ev.calls[0]!.resolve({});
    await new Promise((r) => setTimeout(r, 20));
    peer.input.end();
    expect(await done).toMatchObject({ reason: 'eof', answered: 2 });
    expect(peer.replies()).toHaveLength(2);
  });

  it('answers queue file problems with the tempfail reply', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const events: Array<Record<string, unknown>> = [];
    const done = session(peer, ev, {}, recordingLogger(events));
    peer.send(
      '1 FILE Queue/none.msg',
      '2 FILE ../../etc/passwd',
      '3 FILE Queue/bad.msg',
      '4 FILE',
      '5 FILE "Queue/1.msg',
    );
    await peer.waitLines(5);
    const byseq = Object.fromEntries(peer.replies().map((l) => [l.split(' ')[0], l]));
    expect(byseq['1']).toContain('(queue-file-missing)');
    expect(byseq['2']).toContain('(outside-base)');
    expect(byseq['3']).toContain('(queue-file-malformed)');
    expect(byseq['4']).toContain('(bad-path)');
    expect(byseq['5']).toContain('(bad-path)');
    for (const l of peer.replies()) expect(l).toMatch(/^\d+ REJECTED "/);
    expect(ev.calls).toHaveLength(0);
    peer.input.end();
    await done;
  });

  it('answers the tempfail reply when the evaluator throws', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const done = session(peer, ev);
    peer.send('8 FILE Queue/1.msg');
    await ev.waitForCalls(1);
    ev.calls[0]!.reject(new Error('boom'));
    expect(await peer.reply('8')).toBe('8 REJECTED "sandgate: not scanned yet (internal), will retry"');
    peer.input.end();
    await done;
  });

  it('in broken-config mode says why and answers every FILE with REJECTED', async () => {
    const peer = new Peer();
    const done = session(peer, undefined);
    peer.send('1 INTF 4', '2 FILE Queue/1.msg', '3 FILE Queue/2.msg', '4 QUIT');
    await done;
    expect(peer.lines.filter((l) => l.startsWith('* '))).toEqual([
      '* sandgate helper test started',
      '* sandgate cannot scan: ERR_CONFIG_INVALID: scan.chain: bad; answering every FILE with REJECTED until the helper is restarted',
    ]);
    expect(peer.replies()).toEqual([
      '1 INTF 4',
      '2 REJECTED "sandgate: not scanned yet (config), will retry"',
      '3 REJECTED "sandgate: not scanned yet (config), will retry"',
      '4 OK',
    ]);
  });

  it('QUIT with requests pending: OK at once, pending abandoned and aborted, nothing written after', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const done = session(peer, ev, { concurrency: 1 });
    peer.send('1 FILE Queue/1.msg', '2 FILE Queue/2.msg');
    await ev.waitForCalls(1);
    peer.send('3 QUIT', '4 INTF 4');
    const result = await done;
    expect(result).toEqual({ reason: 'quit', answered: 0, abandoned: 2 });
    expect(peer.replies()).toEqual(['3 OK']);
    expect(ev.calls[0]!.options.signal?.aborted).toBe(true);
    ev.calls[0]!.resolve({});
    await new Promise((r) => setTimeout(r, 10));
    expect(peer.replies()).toEqual(['3 OK']);
  });

  it('at end of input finishes the requests in flight, then ends', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const done = session(peer, ev);
    peer.input.end('1 FILE Queue/1.msg\n2 FILE Queue/2.msg');
    await ev.waitForCalls(2);
    let ended = false;
    void done.then(() => (ended = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(ended).toBe(false);
    (await ev.callFor('t2')).resolve({});
    (await ev.callFor('t1')).resolve({});
    expect(await done).toEqual({ reason: 'eof', answered: 2, abandoned: 0 });
    expect(peer.replies()).toEqual(['2 OK', '1 OK']);
  });

  it('ignores a FILE whose sequence number is still pending', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    const done = session(peer, ev);
    peer.send('1 FILE Queue/1.msg', '1 FILE Queue/2.msg');
    await ev.waitForCalls(1);
    await new Promise((r) => setTimeout(r, 10));
    expect(ev.calls).toHaveLength(1);
    ev.calls[0]!.resolve({});
    peer.input.end();
    await done;
    expect(peer.replies()).toEqual(['1 OK']);
  });

  it('answers INTF while the core is loading; FILE requests wait for it', async () => {
    const peer = new Peer();
    const ev = new ManualEvaluator();
    let ready!: (state: { evaluator: Evaluator }) => void;
    const core = new Promise<{ evaluator: Evaluator }>((r) => (ready = r));
    const done = new HelperSession({
      input: peer.input,
      output: peer.output,
      settings: settings(),
      core,
      log: silentLogger,
    }).start();
    peer.send('1 INTF 4', '2 FILE Queue/1.msg');
    expect(await peer.reply('1')).toBe('1 INTF 4');
    await new Promise((r) => setTimeout(r, 20));
    expect(ev.calls).toHaveLength(0);
    ready({ evaluator: ev });
    await ev.waitForCalls(1);
    ev.calls[0]!.resolve({});
    expect(await peer.reply('2')).toBe('2 OK');
    peer.input.end();
    await done;
  });

  it('answers FILE requests that waited for a core that failed to start with REJECTED', async () => {
    const peer = new Peer();
    let ready!: (state: { brokenReason: string }) => void;
    const core = new Promise<{ brokenReason: string }>((r) => (ready = r));
    const done = new HelperSession({
      input: peer.input,
      output: peer.output,
      settings: settings(),
      core,
      log: silentLogger,
    }).start();
    peer.send('1 FILE Queue/1.msg', '2 FILE Queue/2.msg');
    await new Promise((r) => setTimeout(r, 20));
    expect(peer.replies()).toEqual([]);
    ready({ brokenReason: 'ERR_STATE_DB: cannot open' });
    await peer.waitLines(2);
    expect(peer.replies()).toEqual([
      '1 REJECTED "sandgate: not scanned yet (config), will retry"',
      '2 REJECTED "sandgate: not scanned yet (config), will retry"',
    ]);
    expect(peer.lines).toContain(
      '* sandgate cannot scan: ERR_STATE_DB: cannot open; answering every FILE with REJECTED until the helper is restarted',
    );
    peer.input.end();
    await done;
  });

  it('ends when stdout fails', async () => {
    const peer = new Peer();
    const done = session(peer, new ManualEvaluator());
    peer.output.destroy(new Error('EPIPE'));
    expect((await done).reason).toBe('output-closed');
  });
});
