/**
 * One milter connection: the MTA opens one per SMTP session and sends its events in order. The
 * session negotiates, keeps the client and envelope, rebuilds each message from its header and
 * body events into a spool, and answers end-of-message with the core's decision. Per-message state
 * is reset on ABORT (Postfix sends one after every message, accepted or not) and at each MAIL.
 *
 * Each command is handled by a short phase function that returns the reply to send, or nothing
 * (events negotiated as no-reply, macros, ABORT, QUIT). Commands are handled strictly in order:
 * while end-of-message is being decided, the socket is paused.
 */
import type net from 'node:net';
import { replyMargin, type Evaluation, type Evaluator } from '../core/evaluation.js';
import { isSandgateError } from '../core/errors.js';
import { newMsgId } from '../core/ids.js';
import { lazyChild, type Logger } from '../core/logger.js';
import type { Envelope } from '../core/message.js';
import { describeOutcomes } from '../core/outcome.js';
import type { Spool } from '../mime/spool.js';
import {
  decodeCommand,
  encodeReply,
  MILTER_VERSION,
  MilterProtocolError,
  PacketReader,
  SMFIF,
  SMFIP,
  type MilterCommand,
  type MilterReply,
} from './codec.js';
import { IncomingMessage } from './incoming.js';
import { decisionAnswer, MILTER_REPLIES, refusal, replyCode, type FinalAnswer } from './replies.js';

/** The actions we need: add our header fields and delete inbound copies of them. */
export const WANTED_ACTIONS = SMFIF.ADDHDRS | SMFIF.CHGHDRS;

/**
 * Events we never answer: the connection, HELO, each recipient, header, end of header and body
 * chunk go one way. MAIL is answered: that is where the size limit, the connection cap and
 * shutdown refuse. DATA is answered on purpose, although we need nothing from it: Postfix's smtpd
 * sends the DATA-stage macros, then its cleanup sends the whole header and body in one write. With
 * DATA skipped (SMFIP_NODATA) or unanswered, that write waited for our ACK of the macro packet
 * (Nagle on Postfix's socket against delayed ACK on ours): 40 ms per message, measured with
 * Postfix 3.7 (one SMTP session at a time: 60-70 ms per message against 14-20 ms with DATA
 * answered). Our CONTINUE carries the ACK, and the round trip costs far less. Unknown commands
 * are not wanted. HDR_LEADSPC keeps header bytes as they arrived. RCPT events stay: the envelope
 * feeds bypass lists, the quarantine and release.
 */
export const WANTED_PROTOCOL =
  SMFIP.NOUNKNOWN |
  SMFIP.NR_CONN |
  SMFIP.NR_HELO |
  SMFIP.NR_RCPT |
  SMFIP.NR_HDR |
  SMFIP.NR_EOH |
  SMFIP.NR_BODY |
  SMFIP.HDR_LEADSPC;

/** Which no-reply flag silences which command. */
export const NO_REPLY: Readonly<Partial<Record<MilterCommand['kind'], number>>> = {
  connect: SMFIP.NR_CONN,
  helo: SMFIP.NR_HELO,
  mail: SMFIP.NR_MAIL,
  rcpt: SMFIP.NR_RCPT,
  data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
  unknown: SMFIP.NR_UNKN,
};

/** What a session needs from its server. */
export interface SessionContext {
  readonly evaluator: Evaluator;
  readonly log: Logger;
  readonly spoolDir: string;
  readonly memorySpoolThreshold: number;
  readonly maxMessageSize: number;
  readonly maxReceived: number;
  /** milter.deadline, from end-of-message. */
  readonly deadlineMs: number;
  readonly rejectText: string;
  /** SMFIR_PROGRESS this often while a verdict is pending (Postfix's timeouts are per read). */
  readonly progressIntervalMs: number;
  readonly maxPacket?: number;
  readonly now: () => number;
  /** Why MAIL must be refused with 421 now (shutting down, over the connection cap), if so. */
  refuseMail(session: MilterSession): 'shutting-down' | 'too-many' | undefined;
  /** The per-message summary, after the MTA got its answer. */
  onMessage(summary: MilterSummary): void;
  /** A transaction ended (answered, aborted, or its connection lost). */
  transactionEnded(): void;
}

/** One line per message (milter.message), also emitted for metrics. */
export interface MilterSummary {
  readonly msgId: string;
  /** A decision action, 'refused' (size, loop), or 'none' (the MTA went away or aborted). */
  readonly action: string;
  readonly reason: string;
  /** The SMTP code the client gets (250 for accept and discard; 0 when nothing was answered). */
  readonly code: number;
  readonly reply: string;
  readonly [key: string]: unknown;
}

/** The decision part of a summary line. */
type SummaryFields = { readonly action: string; readonly reason: string } & Readonly<Record<string, unknown>>;

interface Transaction {
  readonly msgId: string;
  readonly started: number;
  sender: string;
  readonly recipients: string[];
  /** Macro `i`: the MTA's queue id, for operators following a message through both logs. */
  queueId?: string;
  message?: IncomingMessage;
}

/** `<a@b>` -> `a@b`; `<>` -> ''. Postfix sends the address as typed; other MTAs without brackets. */
export function envelopeAddress(arg: string | undefined): string {
  const a = (arg ?? '').trim();
  return a.startsWith('<') && a.endsWith('>') ? a.slice(1, -1) : a;
}

/** The SIZE= parameter of MAIL, if any (ESMTP parameters are case-insensitive). */
export function sizeParam(args: readonly string[]): number | undefined {
  for (const a of args.slice(1)) {
    const m = /^size=(\d+)$/i.exec(a);
    if (m) return Number(m[1]);
  }
  return undefined;
}

export class MilterSession {
  /** True between MAIL and the answer to end-of-message. */
  get inTransaction(): boolean {
    return this.tx !== undefined;
  }
  /** True while end-of-message is being decided. */
  evaluating = false;
  closed = false;

  private readonly reader: PacketReader;
  private readonly queue: MilterCommand[] = [];
  private running = false;
  private protocol = 0;
  private negotiated = false;
  private client: { address?: string; hostname?: string } = {};
  private heloName: string | undefined;
  private tx: Transaction | undefined;
  /** Aborted when the MTA closes the connection while a verdict is pending. */
  private gone: AbortController | undefined;
  /** Ends a pending verdict early (shutdown timeout): end-of-message is answered 451. */
  private forced: (() => void) | undefined;
  private readonly log: Logger;

  constructor(
    readonly id: string,
    private readonly socket: net.Socket,
    private readonly ctx: SessionContext,
  ) {
    this.reader = new PacketReader(ctx.maxPacket);
    this.log = lazyChild(ctx.log, { cid: id });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      this.log.debug({ event: 'milter.socket_error', err: err.message }, 'MTA socket error');
    });
    socket.on('close', () => this.onClose());
  }

  /** Shutdown timeout: answer a pending end-of-message with 451 now, then close. */
  forceTempfail(): void {
    this.forced?.();
  }

  /** Closes the connection once what was written has gone out. */
  close(): void {
    this.closed = true;
    this.socket.end(() => this.socket.destroy());
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let commands: MilterCommand[];
    try {
      commands = this.reader.push(chunk).map(decodeCommand);
    } catch (err) {
      return this.protocolError(err);
    }
    // Decoded together, handled in order: a bad packet later in a read stops before anything after it.
    this.queue.push(...commands);
    void this.run();
  }

  private protocolError(err: unknown): void {
    this.log.warn(
      {
        event: 'milter.protocol_error',
        code: isSandgateError(err) ? err.code : 'ERR_MILTER_PROTOCOL',
        err: err instanceof Error ? err.message : String(err),
        ...(isSandgateError(err) ? err.details : {}),
      },
      'bad milter packet from the MTA; closing the connection',
    );
    this.queue.length = 0;
    this.closed = true;
    this.socket.destroy();
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (!this.closed) {
        const cmd = this.queue.shift();
        if (cmd === undefined) break;
        let reply: MilterReply | readonly MilterReply[] | undefined;
        try {
          reply = cmd.kind === 'eom' ? await this.endOfMessage(cmd.chunk) : this.handle(cmd);
        } catch (err) {
          if (err instanceof MilterProtocolError) return this.protocolError(err);
          // A bug of ours must not take the process (and every other connection) down: this
          // connection ends, and the MTA applies milter_default_action to its message.
          this.log.error(
            { event: 'milter.internal_error', err: err instanceof Error ? err.message : String(err) },
            'unexpected error; closing the connection',
          );
          this.closed = true;
          this.socket.destroy();
          return;
        }
        if (reply !== undefined && !this.closed) this.send(reply);
      }
    } finally {
      this.running = false;
    }
  }

  private send(reply: MilterReply | readonly MilterReply[]): void {
    const list = Array.isArray(reply) ? (reply as readonly MilterReply[]) : [reply as MilterReply];
    // One write for the edits and the verdict: one segment, one wake-up of the MTA.
    this.socket.write(
      list.length === 1 ? encodeReply(list[0] as MilterReply) : Buffer.concat(list.map(encodeReply)),
    );
  }

  /** Every command but end-of-message: the reply, or undefined when none is due. */
  private handle(cmd: MilterCommand): MilterReply | undefined {
    if (cmd.kind !== 'optneg' && !this.negotiated) {
      throw new MilterProtocolError(`"${cmd.kind}" before option negotiation`);
    }
    switch (cmd.kind) {
      case 'optneg':
        return this.negotiate(cmd);
      case 'macro':
        if (cmd.macros.has('i') && this.tx) this.tx.queueId = cmd.macros.get('i');
        return undefined;
      case 'connect':
        this.client = {
          ...(cmd.address !== '' && cmd.family !== 'unix' ? { address: normaliseAddress(cmd.address) } : {}),
          hostname: cmd.hostname,
        };
        return this.ack(cmd);
      case 'helo':
        this.heloName = cmd.name;
        return this.ack(cmd);
      case 'mail':
        return this.mail(cmd.args);
      case 'rcpt':
        this.transaction().recipients.push(envelopeAddress(cmd.args[0]));
        return this.ack(cmd);
      case 'data':
      case 'unknown':
        return this.ack(cmd);
      case 'header':
        this.backpressure(this.message().header(cmd.name, cmd.value));
        return this.ack(cmd);
      case 'eoh':
        this.backpressure(this.message().endOfHeaders());
        return this.ack(cmd);
      case 'body':
        this.backpressure(this.message().body(cmd.chunk));
        return this.ack(cmd);
      case 'abort':
        this.resetMessage('abort');
        return undefined;
      case 'quit':
        this.resetMessage('quit');
        this.closed = true;
        this.socket.end();
        return undefined;
      case 'quitNc':
        // The MTA reuses this connection for another SMTP session.
        this.resetMessage('quit');
        this.client = {};
        this.heloName = undefined;
        return undefined;
      case 'eom':
        throw new Error('end-of-message is handled by endOfMessage()');
    }
  }

  private negotiate(cmd: Extract<MilterCommand, { kind: 'optneg' }>): MilterReply {
    if (this.negotiated) throw new MilterProtocolError('OPTNEG sent twice');
    if (cmd.version < 2) throw new MilterProtocolError(`milter protocol version ${cmd.version} is too old`);
    if ((cmd.actions & WANTED_ACTIONS) !== WANTED_ACTIONS) {
      throw new MilterProtocolError('the MTA does not let the filter add and change header fields', {
        actions: cmd.actions,
      });
    }
    this.negotiated = true;
    // Only what the MTA offered; events it cannot skip or leave unanswered are answered.
    this.protocol = WANTED_PROTOCOL & cmd.protocol;
    const reply: MilterReply = {
      kind: 'optneg',
      version: Math.min(MILTER_VERSION, cmd.version),
      actions: WANTED_ACTIONS,
      protocol: this.protocol,
    };
    this.log.debug(
      { event: 'milter.negotiated', version: reply.version, offered: cmd.protocol, protocol: this.protocol },
      'option negotiation',
    );
    return reply;
  }

  /** CONTINUE, unless the event was negotiated as one the MTA expects no reply to. */
  private ack(cmd: MilterCommand): MilterReply | undefined {
    const nr = NO_REPLY[cmd.kind];
    return nr !== undefined && (this.protocol & nr) !== 0 ? undefined : { kind: 'continue' };
  }

  private mail(args: readonly string[]): MilterReply {
    // A MAIL without ABORT after the last message starts afresh all the same.
    this.resetMessage('abort');
    const refused = this.ctx.refuseMail(this);
    if (refused !== undefined) {
      return replyCode(refused === 'too-many' ? MILTER_REPLIES.tooMany : MILTER_REPLIES.shuttingDown);
    }
    const size = sizeParam(args);
    if (size !== undefined && size > this.ctx.maxMessageSize) {
      this.log.info(
        { event: 'milter.size_refused', size, limit: this.ctx.maxMessageSize },
        'SIZE above the limit; refused at MAIL',
      );
      return replyCode(MILTER_REPLIES.tooBig(this.ctx.maxMessageSize));
    }
    const tx = this.transaction();
    tx.sender = envelopeAddress(args[0]);
    return { kind: 'continue' };
  }

  private transaction(): Transaction {
    if (this.tx === undefined) {
      const started = this.ctx.now();
      this.tx = { msgId: newMsgId(started), started, sender: '', recipients: [] };
    }
    return this.tx;
  }

  private message(): IncomingMessage {
    const tx = this.transaction();
    tx.message ??= new IncomingMessage({
      msgId: tx.msgId,
      envelope: this.envelope(tx),
      dir: this.ctx.spoolDir,
      memoryThreshold: this.ctx.memorySpoolThreshold,
      maxBytes: this.ctx.maxMessageSize,
      leadingSpace: (this.protocol & SMFIP.HDR_LEADSPC) !== 0,
    });
    return tx.message;
  }

  private envelope(tx: Transaction): Envelope {
    return {
      sender: tx.sender,
      recipients: tx.recipients,
      ...(this.client.address !== undefined ? { clientAddress: this.client.address } : {}),
      ...(this.heloName !== undefined ? { heloName: this.heloName } : {}),
      frontEnd: 'milter',
    };
  }

  /** The spool is full for now: stop reading the MTA until it has drained. */
  private backpressure(ok: boolean): void {
    if (ok || this.tx?.message === undefined) return;
    this.socket.pause();
    this.tx.message.whenDrained(() => {
      if (!this.closed) this.socket.resume();
    });
  }

  private resetMessage(why: 'abort' | 'quit' | 'closed'): void {
    const tx = this.tx;
    this.tx = undefined;
    if (tx !== undefined) this.ctx.transactionEnded();
    if (tx?.message !== undefined) {
      void tx.message.abort();
      // A message the MTA gave up on before its end (RSET, a client that went away, a lost connection).
      this.log.debug(
        { event: 'milter.message_aborted', msgId: tx.msgId, why },
        'message dropped before its end',
      );
    }
  }

  private onClose(): void {
    this.closed = true;
    this.queue.length = 0;
    if (this.evaluating) this.gone?.abort();
    else this.resetMessage('closed');
  }

  // ----------------------------------------------------------------------------------------------
  // End of message

  private async endOfMessage(lastChunk: Buffer): Promise<readonly MilterReply[] | undefined> {
    if (!this.negotiated) throw new MilterProtocolError('end of message before option negotiation');
    const tx = this.transaction();
    const message = this.message();
    if (lastChunk.length > 0) message.body(lastChunk);
    this.evaluating = true;
    this.socket.pause();
    const eom = this.ctx.now();
    let spool: Spool | undefined;
    let answer: FinalAnswer;
    let summary: SummaryFields;
    try {
      try {
        spool = await message.finish();
      } catch (err) {
        const reason = isSandgateError(err) ? err.code : 'spool';
        answer = refusal(MILTER_REPLIES.localError(tx.msgId));
        summary = { action: 'tempfail', reason };
        this.log.error(
          { event: 'milter.spool_failed', msgId: tx.msgId, code: reason },
          'cannot spool the message',
        );
        return this.answer(tx, answer, summary);
      }
      ({ answer, summary } = await this.decide(tx, message, spool, eom));
      if (this.closed) {
        // Nobody hears the answer: the MTA went away and still holds the message.
        return this.answer(tx, undefined, { ...summary, action: 'none', reason: 'mta-gone' });
      }
      return this.answer(tx, answer, summary);
    } finally {
      spool?.dispose();
      this.evaluating = false;
      if (!this.closed) this.socket.resume();
    }
  }

  /** Logs the summary, resets the message and returns the replies (undefined: none). */
  private answer(
    tx: Transaction,
    answer: FinalAnswer | undefined,
    summary: SummaryFields,
  ): readonly MilterReply[] | undefined {
    const line = {
      ms: this.ctx.now() - tx.started,
      recipients: tx.recipients.length,
      code: answer?.code ?? 0,
      reply: answer?.reply ?? 'none',
      ...(tx.queueId !== undefined ? { queueId: tx.queueId } : {}),
      ...summary,
    };
    this.ctx.log.info({ cid: this.id, msgId: tx.msgId, event: 'milter.message', ...line }, 'message');
    if (this.tx === tx) this.tx = undefined;
    queueMicrotask(() => {
      this.ctx.onMessage({ msgId: tx.msgId, ...line });
      this.ctx.transactionEnded();
    });
    return answer?.replies;
  }

  private async decide(
    tx: Transaction,
    message: IncomingMessage,
    spool: Spool,
    eom: number,
  ): Promise<{ answer: FinalAnswer; summary: SummaryFields }> {
    const bytes = spool.receivedBytes;
    if (spool.sizeExceeded) {
      return {
        answer: refusal(MILTER_REPLIES.tooBig(this.ctx.maxMessageSize)),
        summary: { action: 'refused', reason: 'size', bytes },
      };
    }
    const hops = message.hops;
    if (hops > this.ctx.maxReceived) {
      return {
        answer: refusal(MILTER_REPLIES.loop(hops)),
        summary: { action: 'refused', reason: 'loop', hops, bytes },
      };
    }
    const evaluation = await this.evaluate(spool, eom);
    if (evaluation === 'deadline') {
      return {
        answer: refusal(MILTER_REPLIES.deadline(tx.msgId)),
        summary: { action: 'tempfail', reason: 'deadline', bytes },
      };
    }
    if (evaluation === 'forced') {
      return {
        answer: refusal(MILTER_REPLIES.stopping(tx.msgId)),
        summary: { action: 'tempfail', reason: 'shutdown', bytes },
      };
    }
    if (evaluation instanceof Error) {
      this.log.error(
        { event: 'milter.evaluate_failed', msgId: tx.msgId, err: evaluation.message },
        'evaluation failed',
      );
      return {
        answer: refusal(MILTER_REPLIES.localError(tx.msgId)),
        summary: { action: 'tempfail', reason: 'internal', bytes },
      };
    }
    const answer = decisionAnswer(evaluation, {
      rejectText: this.ctx.rejectText,
      countHeader: (name) => message.countHeader(name),
      leadingSpace: (this.protocol & SMFIP.HDR_LEADSPC) !== 0,
    });
    const d = evaluation.decision;
    return {
      answer,
      summary: {
        action: d.action,
        reason: answer.code === 451 && d.action !== 'tempfail' ? 'copy-missing' : d.reason,
        verdict: d.verdict,
        threats: d.threats,
        outcomes: describeOutcomes(evaluation.outcomes),
        ...(evaluation.quarantineId !== undefined ? { quarantineId: evaluation.quarantineId } : {}),
        bytes,
        scanMs: evaluation.ms,
        ...(answer.reply === 'accept'
          ? { removed: answer.replies.filter((r) => r.kind === 'chgHeader').length }
          : {}),
      },
    };
  }

  /**
   * The core's verdict within milter.deadline from end-of-message, with PROGRESS sent meanwhile so
   * the MTA's per-read timeout does not run out. At the deadline the core is not stopped: a scan
   * it started goes on so its verdict answers the retry from the cache.
   */
  private async evaluate(spool: Spool, eom: number): Promise<Evaluation | 'deadline' | 'forced' | Error> {
    const deadline = eom + this.ctx.deadlineMs;
    this.gone = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const overrun = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), Math.max(0, deadline - this.ctx.now()));
    });
    const forced = new Promise<'forced'>((resolve) => {
      this.forced = () => resolve('forced');
    });
    const progress = setInterval(() => {
      if (!this.closed) this.send({ kind: 'progress' });
    }, this.ctx.progressIntervalMs);
    try {
      return await Promise.race([
        this.ctx.evaluator
          .evaluate(spool, {
            deadline: deadline - replyMargin(this.ctx.deadlineMs),
            signal: this.gone.signal,
          })
          .catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))),
        overrun,
        forced,
      ]);
    } finally {
      clearTimeout(timer);
      clearInterval(progress);
      this.forced = undefined;
      this.gone = undefined;
    }
  }
}

/** ::ffff:192.0.2.1 -> 192.0.2.1, as the relay and the bypass lists write addresses. */
function normaliseAddress(address: string): string {
  return address.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');
}
