import type { Readable, Writable } from 'node:stream';
import { replyMargin, type Evaluator } from '../core/evaluation.js';
import { newMsgId } from '../core/ids.js';
import type { Logger } from '../core/logger.js';
import { BrokenNotice } from './broken-notice.js';
import type { CoreState } from './core-state.js';
import { evaluateRequest } from './evaluate-request.js';
import { JunkLog } from './junk-log.js';
import { OutputWriter } from './output-writer.js';
import {
  formatInfo,
  formatReply,
  LineReader,
  parseCommandLine,
  sequenceOfTooLongLine,
  type InputLine,
  type Command,
  type Reply,
} from './protocol.js';
import { tempfailReply, type HelperTempfailReason } from './replies.js';
import type { Request } from './request.js';
import type { HelperSettings } from './settings.js';

export interface HelperSessionOptions {
  readonly input: Readable;
  readonly output: Writable;
  readonly settings: HelperSettings;
  /**
   * The core, or a promise of it: the session answers INTF, KEY and QUIT at once while the core
   * is still loading; FILE requests wait for it in order (their deadline running).
   */
  readonly core: CoreState | Promise<CoreState>;
  readonly log: Logger;
  /** `* ` lines to send first (banner, log-file trouble). */
  readonly notices?: readonly string[];
  readonly now?: () => number;
  readonly msgId?: () => string;
}

/** Why the session ended: QUIT answered, end of input with every request answered, or stdout gone. */
export type HelperExitReason = 'quit' | 'eof' | 'output-closed';

export interface HelperResult {
  readonly reason: HelperExitReason;
  /** FILE requests answered. */
  readonly answered: number;
  /** FILE requests dropped unanswered at QUIT (CommuniGate re-sends them to the next instance). */
  readonly abandoned: number;
}

/**
 * The CommuniGate Pro helper loop: reads command lines, answers INTF, KEY, QUIT and unknown
 * commands at once, and evaluates FILE requests concurrently (up to `concurrency`, more wait in
 * order), each under its own deadline, answering in whatever order the verdicts come. Exactly one
 * final reply per request; each reply is one whole line in one write. Nothing but protocol lines
 * goes to `output`.
 */
export class HelperSession {
  private readonly o: HelperSessionOptions;
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly lines: LineReader;
  private readonly pending = new Map<string, Request>();
  private readonly waiting: Request[] = [];
  private running = 0;
  /** Undefined while the core is loading. */
  private core: CoreState | undefined;
  private answered = 0;
  private closing: HelperExitReason | undefined;
  private inputEnded = false;
  private readonly out: OutputWriter;
  private readonly junkLog: JunkLog;
  private readonly broken: BrokenNotice;
  private finish!: (result: HelperResult) => void;
  readonly done: Promise<HelperResult>;

  constructor(options: HelperSessionOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    this.newId = options.msgId ?? (() => newMsgId(this.now()));
    this.lines = new LineReader(options.settings.maxLineLength);
    this.out = new OutputWriter(options.output);
    this.junkLog = new JunkLog(options.log, this.now);
    this.broken = new BrokenNotice(this.now, (text) => this.info(text));
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  /** Sends the notices and starts reading. Resolves `done` when the session ends. */
  start(): Promise<HelperResult> {
    const { input, output, log } = this.o;
    output.on('error', (err) => {
      log.warn({ event: 'helper.output_error', err }, 'stdout failed; stopping');
      this.out.markClosed();
      this.close('output-closed');
    });
    output.on('close', () => {
      this.out.markClosed();
    });
    for (const n of this.o.notices ?? []) this.info(n);
    const core = this.o.core;
    if (core instanceof Promise) {
      core.then(
        (state) => this.onCore(state),
        (err: unknown) => this.onCore({ brokenReason: `the core failed to start: ${String(err)}` }),
      );
    } else {
      this.onCore(core);
    }

    input.on('data', (chunk: Buffer | string) => {
      if (this.closing !== undefined) return;
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      for (const line of this.lines.push(buf)) {
        if (this.closing !== undefined) break;
        this.onLine(line);
      }
    });
    input.on('end', () => this.onEnd());
    input.on('error', (err) => {
      log.warn({ event: 'helper.input_error', err }, 'stdin failed; treating it as end of input');
      this.onEnd();
    });
    return this.done;
  }

  private onCore(state: CoreState): void {
    if (this.closing !== undefined) return;
    this.core = state;
    if (state.evaluator === undefined) {
      for (const req of this.waiting.splice(0)) this.answerBroken(req);
      return;
    }
    this.pump();
  }

  private onEnd(): void {
    if (this.inputEnded) return;
    this.inputEnded = true;
    for (const line of this.lines.end()) {
      if (this.closing !== undefined) break;
      this.onLine(line);
    }
    if (this.closing !== undefined) return;
    this.o.log.info(
      { event: 'helper.eof', pending: this.pending.size },
      'end of input; finishing requests in flight',
    );
    this.maybeEndAfterEof();
  }

  private maybeEndAfterEof(): void {
    if (this.inputEnded && this.closing === undefined && this.pending.size === 0) this.close('eof');
  }

  private onLine(line: InputLine): void {
    if (line.kind === 'too-long') {
      this.onTooLong(line.prefix, line.bytes);
      return;
    }
    const text = line.text;
    const parsed = parseCommandLine(text);
    if (!parsed.ok) {
      if (parsed.reason === 'no-sequence')
        this.junkLog.junk({ reason: 'no-sequence', bytes: Buffer.byteLength(text) });
      return;
    }
    this.onCommand(parsed.command);
  }

  /**
   * A line longer than helper.maxLineLength: when it starts with a sequence number, CommuniGate
   * waits for an answer to it (a FILE with a path we will not read), so it gets the tempfail reply
   * and the message stays in CommuniGate's queue. Without a number it is junk: logged, no reply.
   */
  private onTooLong(prefix: string, bytes: number): void {
    const seq = sequenceOfTooLongLine(prefix);
    if (seq === undefined) {
      this.junkLog.junk({ reason: 'too-long', bytes });
      return;
    }
    if (this.pending.has(seq)) {
      this.o.log.warn(
        { event: 'helper.duplicate_seq', seq },
        'over-long line with a sequence number still pending; ignored',
      );
      return;
    }
    this.o.log.warn(
      { event: 'helper.line_too_long', seq, bytes, maxLineLength: this.o.settings.maxLineLength },
      'command line longer than helper.maxLineLength; answering tempfail',
    );
    this.write(formatReply(seq, this.tempfail('line-too-long')));
  }

  private onCommand(cmd: Command): void {
    switch (cmd.kind) {
      case 'INTF': {
        const max = this.o.settings.maxProtocolVersion;
        const version = cmd.version === undefined ? max : Math.min(cmd.version, max);
        this.o.log.info({ event: 'helper.intf', server: cmd.version, answered: version }, 'protocol version');
        this.write(formatReply(cmd.seq, { kind: 'INTF', version }));
        return;
      }
      case 'KEY':
        this.write(formatReply(cmd.seq, { kind: 'OK' }));
        return;
      case 'QUIT':
        this.o.log.info({ event: 'helper.quit', pending: this.pending.size }, 'QUIT');
        this.write(formatReply(cmd.seq, { kind: 'OK' }));
        this.close('quit');
        return;
      case 'unknown':
        this.o.log.warn(
          { event: 'helper.unsupported_command', seq: cmd.seq, command: cmd.command.slice(0, 32) },
          'unsupported command',
        );
        this.write(formatReply(cmd.seq, { kind: 'ERROR', text: 'unsupported command' }));
        return;
      case 'FILE':
        this.onFile(cmd.seq, cmd.path);
        return;
    }
  }

  private onFile(seq: string, path: string | undefined): void {
    if (this.pending.has(seq)) {
      this.o.log.warn(
        { event: 'helper.duplicate_seq', seq },
        'FILE with a sequence number still pending; ignored',
      );
      return;
    }
    const received = this.now();
    const { deadlineMs } = this.o.settings;
    const req: Request = {
      seq,
      path,
      msgId: this.newId(),
      received,
      answerBy: received + deadlineMs - replyMargin(deadlineMs),
      abort: new AbortController(),
      state: 'queued',
    };
    this.pending.set(seq, req);
    this.o.log.debug({ event: 'helper.request', seq, path, msgId: req.msgId }, 'FILE');

    if (this.core !== undefined && this.core.evaluator === undefined) {
      this.answerBroken(req);
      return;
    }
    if (path === undefined) {
      this.answer(req, this.tempfail('bad-path', req), 'bad-path');
      return;
    }
    req.timer = setTimeout(() => this.onDeadline(req), req.answerBy - received);
    this.waiting.push(req);
    this.pump();
  }

  /** The helper's own tempfail reply (the core's tempfail decisions are mapped by replyForEvaluation). */
  private tempfail(reason: HelperTempfailReason, req?: Request): Reply {
    return tempfailReply(this.o.settings.replies, reason, req?.msgId);
  }

  /** No verdict core (broken configuration): the tempfail reply, and a `* ` line saying why. */
  private answerBroken(req: Request): void {
    this.broken.send(this.core);
    this.answer(req, this.tempfail('config', req), 'config');
  }

  /**
   * The request's deadline. A request still waiting for a slot is answered tempfail now. A running
   * one was given the same deadline, so the core answers at this moment; only if it has not by the
   * end of the reply margin does the session answer tempfail itself. The evaluation is not aborted:
   * the core may keep a sandbox task going for the retry.
   */
  private onDeadline(req: Request, backstop = false): void {
    if (req.state === 'done') return;
    if (req.state === 'running' && !backstop) {
      req.timer = setTimeout(() => this.onDeadline(req, true), replyMargin(this.o.settings.deadlineMs));
      return;
    }
    const i = this.waiting.indexOf(req);
    if (i !== -1) this.waiting.splice(i, 1);
    this.o.log.warn(
      {
        event: 'helper.deadline',
        seq: req.seq,
        msgId: req.msgId,
        state: req.state,
        ms: this.now() - req.received,
      },
      'no verdict within the deadline; answering tempfail',
    );
    this.answer(req, this.tempfail('deadline', req), 'deadline');
  }

  private run(req: Request, evaluator: Evaluator): void {
    req.state = 'running';
    this.running++;
    evaluateRequest(req, evaluator, { settings: this.o.settings, log: this.o.log, now: this.now }).then(
      (result) =>
        'evaluation' in result
          ? this.answer(req, result.reply, result.evaluation.decision.action)
          : this.answer(req, this.tempfail(result.tempfail, req), result.tempfail),
      (err: unknown) => {
        this.o.log.error(
          { event: 'helper.internal_error', seq: req.seq, msgId: req.msgId, err },
          'evaluation failed',
        );
        this.answer(req, this.tempfail('internal', req), 'internal');
      },
    );
  }

  /** The one final reply of a request; later attempts (deadline vs. verdict) are ignored. */
  private answer(req: Request, reply: Reply, outcome: string): void {
    if (req.state === 'done') return;
    const wasRunning = req.state === 'running';
    req.state = 'done';
    if (req.timer !== undefined) clearTimeout(req.timer);
    this.pending.delete(req.seq);
    if (this.closing === 'quit' || this.closing === 'output-closed') return;
    this.answered++;
    this.o.log.debug(
      { event: 'helper.answer', seq: req.seq, msgId: req.msgId, reply: reply.kind, outcome },
      'reply',
    );
    this.write(formatReply(req.seq, reply));
    if (wasRunning) {
      this.running--;
      this.pump();
    }
    this.maybeEndAfterEof();
  }

  private pump(): void {
    const evaluator = this.core?.evaluator;
    if (evaluator === undefined) return;
    while (this.running < this.o.settings.concurrency && this.waiting.length > 0) {
      this.run(this.waiting.shift() as Request, evaluator);
    }
  }

  /** Sends an informational `* ` line (shown in CommuniGate's log). */
  notice(text: string): void {
    if (this.closing === undefined) this.info(text);
  }

  private info(text: string): void {
    this.write(formatInfo(text));
  }

  private write(line: string): void {
    this.out.write(line);
  }

  private close(reason: HelperExitReason): void {
    if (this.closing !== undefined) return;
    this.closing = reason;
    const abandoned = [...this.pending.values()];
    for (const req of abandoned) {
      if (req.timer !== undefined) clearTimeout(req.timer);
      req.state = 'done';
      req.abort.abort();
    }
    this.pending.clear();
    this.waiting.length = 0;
    if (abandoned.length > 0) {
      this.o.log.info(
        { event: 'helper.abandoned', count: abandoned.length, reason },
        'requests left for the next instance',
      );
    }
    this.o.input.pause();
    const result: HelperResult = { reason, answered: this.answered, abandoned: abandoned.length };
    // Resolve once everything written so far has been handed to the OS.
    this.out.whenFlushed(() => this.finish(result));
  }
}
