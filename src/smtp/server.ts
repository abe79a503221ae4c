import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { NextHop, RelayConfig } from '../config/relay.js';
import type { Evaluator } from '../core/evaluation.js';
import { isSandgateError } from '../core/errors.js';
import { newMsgId } from '../core/ids.js';
import { lazyChild, type Logger } from '../core/logger.js';
import { describeOutcomes } from '../core/outcome.js';
import type { Envelope } from '../core/message.js';
import { clientAttributesOf, xforwardOf } from './client-attributes.js';
import { replyToData, type DataCallback } from './data-reply.js';
import { evaluateUnderDeadline, type DeadlineContext } from './evaluate-under-deadline.js';
import { Forwarder } from './forwarder.js';
import type { QueueFrontEnd } from './queue/intake.js';
import { rewriteHeaders } from './headers.js';
import { NetworkList, normaliseAddress } from './networks.js';
import { createConnector, type NextHopConnector, type Params } from './next-hop.js';
import { SessionPool } from './session-pool.js';
import { receiveMessage } from './receive.js';
import { RelaySmtpServer } from './relay-smtp-server.js';
import {
  combineReplies,
  decisionReply,
  nextHopReply,
  passBack,
  REPLIES,
  toError,
  toText,
  type SmtpReply,
} from './replies.js';

/** What the relay needs from the configuration (the relay section plus two scan limits). */
export interface RelayServerOptions {
  readonly relay: RelayConfig;
  readonly evaluator: Evaluator;
  readonly log: Logger;
  /** Directory for file spools. */
  readonly spoolDir: string;
  readonly maxMessageSize: number;
  readonly memorySpoolThreshold: number;
  /** Override the next hop (tests); default: relay.nextHop. */
  readonly nextHop?: NextHop;
  readonly now?: () => number;
  /** relay.mode queue: RCPT is answered locally and DATA accepted into this durable queue. */
  readonly queue?: QueueFrontEnd;
}

/** Counters the relay reports (the CLI wires them to prom-client). */
export interface RelayStats {
  connections: number;
  transactions: number;
}

type Callback = (err?: Error | null) => void;

/** The summary of one transaction, as logged; emitted as 'message' after the client got its reply. */
export interface MessageSummary {
  readonly msgId: string;
  /** What happened: a decision action, 'refused' (size, loop), or 'none' (the client went away). */
  readonly action: string;
  readonly reason: string;
  readonly code: number;
  readonly [key: string]: unknown;
}

export class RelayServer extends EventEmitter<{ message: [MessageSummary] }> {
  readonly stats: RelayStats = { connections: 0, transactions: 0 };
  private readonly smtp: RelaySmtpServer;
  private readonly connector: NextHopConnector;
  /** Idle next-hop sessions, shared by the client sessions between their transactions. */
  private readonly pool: SessionPool;
  private readonly allowed: NetworkList;
  private readonly forwarders = new Map<string, Forwarder>();
  /** Sessions whose message is between DATA and our reply. */
  private readonly busy = new Set<string>();
  /**
   * One per connection, aborted when its client goes away, so an evaluation can stop early and
   * its message is not handed on (the client did not get our reply and will send it again).
   * Per connection, not per message: creating an AbortSignal costs several µs.
   */
  private readonly aborts = new Map<string, AbortController>();
  private readonly now: () => number;
  /** What each message's evaluation runs under (relay.deadline). */
  private readonly deadline: DeadlineContext;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: RelayServerOptions) {
    super();
    const relay = options.relay;
    this.now = options.now ?? Date.now;
    this.deadline = {
      evaluator: options.evaluator,
      deadlineMs: relay.deadline,
      now: this.now,
    };
    this.allowed = new NetworkList(relay.allowedClients);
    const trusted = new NetworkList(relay.trustedPeers.filter((a) => !a.includes('/')));
    const hop = relay.nextHopOptions;
    const pass =
      hop.authPasswordFile !== undefined ? readFileSync(hop.authPasswordFile, 'utf8').trim() : undefined;
    this.connector = createConnector(options.nextHop ?? relay.nextHop, {
      name: relay.hostname,
      timeout: hop.timeout,
      tls: hop.tls,
      ...(hop.caFile !== undefined ? { ca: readFileSync(hop.caFile) } : {}),
      ...(hop.servername !== undefined ? { servername: hop.servername } : {}),
      ...(hop.authUser !== undefined && pass !== undefined ? { auth: { user: hop.authUser, pass } } : {}),
    });
    this.pool = new SessionPool(this.connector, Math.max(1000, Math.min(hop.keepAlive, 30_000)));
    const tlsFiles =
      relay.tls.certFile !== undefined && relay.tls.keyFile !== undefined
        ? { cert: readFileSync(relay.tls.certFile), key: readFileSync(relay.tls.keyFile) }
        : undefined;
    const trustedList = relay.trustedPeers.filter((a) => !a.includes('/'));

    this.smtp = new RelaySmtpServer(
      {
        name: relay.hostname,
        banner: 'sandgate',
        lmtp: relay.protocol === 'lmtp',
        size: options.maxMessageSize,
        // Never hand smtp-server our logger: at debug it logs raw AUTH lines.
        logger: false,
        disableReverseLookup: true,
        authOptional: true,
        disabledCommands: tlsFiles ? ['AUTH'] : ['AUTH', 'STARTTLS'],
        ...(tlsFiles ?? {}),
        hideDSN: false,
        useXForward: trustedList,
        useXClient: trustedList,
        maxClients: relay.maxClients,
        socketTimeout: relay.socketTimeout,
        closeTimeout: Math.max(1, relay.shutdownTimeout),
        onConnect: (session, cb) => this.onConnect(session, cb),
        onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
        onRcptTo: (address, session, cb) => void this.onRcptTo(address, session, cb),
        onData: (stream, session, cb) => void this.onData(stream, session, cb),
        onClose: (session) => void this.onClose(session),
      },
      trusted,
      relay.maxClients,
    );
    this.smtp.on('error', (err: Error) => {
      this.options.log.debug({ event: 'relay.socket_error', err: err.message }, 'client socket error');
    });
  }

  get nextHop(): string {
    return this.connector.describe;
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  listen(
    host = this.options.relay.listen.host,
    port = this.options.relay.listen.port,
  ): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const srv = this.smtp.server;
      srv.once('error', reject);
      this.smtp.listen(port, host, () => {
        srv.off('error', reject);
        const a = srv.address() as net.AddressInfo;
        this.options.log.info(
          {
            event: 'relay.listening',
            host: a.address,
            port: a.port,
            protocol: this.options.relay.protocol,
            nextHop: this.nextHop,
          },
          'relay listening',
        );
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /**
   * Graceful shutdown: stop accepting; idle sessions get 421 at once; messages in flight get up
   * to relay.shutdownTimeout to finish, then their sessions get 421 too.
   */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.smtp.close(() => resolve());
      this.closeIdle();
    }).then(async () => {
      await Promise.all([...this.forwarders.values()].map((f) => f.close()));
      this.forwarders.clear();
      await this.pool.close();
    });
    return this.closing;
  }

  /** While shutting down: 421 and close every session that is not in the middle of a message. */
  private closeIdle(): void {
    for (const conn of this.smtp.connections) {
      if (!conn.session.envelope.mailFrom && !this.busy.has(conn.session.id)) {
        conn.send(421, toText(REPLIES.shuttingDown));
        conn.close();
      }
    }
  }

  private onConnect(session: SMTPServerSession, cb: Callback): void {
    if (!this.allowed.has(session.remoteAddress)) {
      this.options.log.warn(
        { event: 'relay.client_refused', client: session.remoteAddress },
        'client not in relay.allowedClients',
      );
      return cb(toError(REPLIES.notAllowed));
    }
    this.stats.connections++;
    this.aborts.set(session.id, new AbortController());
    cb();
  }

  private forwarder(session: SMTPServerSession): Forwarder {
    let f = this.forwarders.get(session.id);
    if (f === undefined) {
      f = new Forwarder({
        connector: this.connector,
        pool: this.pool,
        keepAliveMs: this.options.relay.nextHopOptions.keepAlive,
        log: lazyChild(this.options.log, { cid: session.id }),
      });
      this.forwarders.set(session.id, f);
    }
    return f;
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: Callback): void {
    // Queue mode takes the envelope at DATA; inline, MAIL reaches the next hop with the first RCPT.
    if (!this.options.queue) {
      this.forwarder(session).mail(
        address.address,
        paramsOf(address),
        clientAttributesOf(session, this.options.relay.nextHopOptions),
      );
    }
    cb();
  }

  private async onRcptTo(
    address: SMTPServerAddress,
    session: SMTPServerSession,
    cb: Callback,
  ): Promise<void> {
    if (this.options.queue) {
      const refusal = this.options.queue.rcpt(session.envelope.rcptTo.length);
      return cb(refusal ? toError(refusal) : null);
    }
    const r = await this.forwarder(session).rcpt(address.address, paramsOf(address));
    cb(r.code < 300 ? null : toError(passBack(r)));
  }

  private async onClose(session: SMTPServerSession): Promise<void> {
    const controller = this.aborts.get(session.id);
    this.aborts.delete(session.id);
    // Only a message in flight listens; an abort makes a DOMException and its stack trace.
    if (this.busy.has(session.id)) controller?.abort();
    const f = this.forwarders.get(session.id);
    this.forwarders.delete(session.id);
    await f?.close();
  }

  private async onData(
    stream: SMTPServerDataStream,
    session: SMTPServerSession,
    cb: DataCallback,
  ): Promise<void> {
    const started = this.now();
    const msgId = newMsgId(started);
    const forwarder = this.forwarder(session);
    // Created only if something besides the summary line is logged (the summary names both itself).
    const log = lazyChild(this.options.log, { cid: session.id, msgId });
    const queue = this.options.queue;
    const recipients = queue ? session.envelope.rcptTo.map((a) => a.address) : [...forwarder.recipients];
    const envelope: Envelope = {
      sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      recipients,
      clientAddress: normaliseAddress(session.remoteAddress),
      ...(session.hostNameAppearsAs ? { heloName: session.hostNameAppearsAs } : {}),
      frontEnd: 'relay',
    };
    this.busy.add(session.id);
    this.stats.transactions++;
    const lmtp = this.options.relay.protocol === 'lmtp';
    const answer = (
      reply: SmtpReply | Array<SmtpReply>,
      summary: { action: string; reason: string } & Record<string, unknown>,
    ) => {
      const code = Array.isArray(reply) ? (reply[0]?.code ?? 0) : reply.code;
      const line = { ms: this.now() - started, recipients: recipients.length, code, ...summary };
      this.options.log.info({ cid: session.id, msgId, event: 'relay.message', ...line }, 'message');
      // After the `finally` below has disposed of the spool.
      queueMicrotask(() => this.emit('message', { msgId, ...line }));
      replyToData(cb, reply);
    };

    let received: Awaited<ReturnType<typeof receiveMessage>>;
    try {
      received = await receiveMessage(stream, {
        msgId,
        envelope,
        dir: this.options.spoolDir,
        memoryThreshold: this.options.memorySpoolThreshold,
        maxBytes: this.options.maxMessageSize,
      });
    } catch (err) {
      // The client went away before its final dot (or our spool failed): nothing is handed on.
      await forwarder.abandon();
      this.busy.delete(session.id);
      const code = isSandgateError(err) ? err.code : 'client-gone';
      answer(REPLIES.localError(msgId), { action: 'none', reason: code });
      return;
    }

    const { spool } = received;
    try {
      if (received.sizeExceeded) {
        await forwarder.abandon();
        return answer(REPLIES.tooBig(this.options.maxMessageSize), {
          action: 'refused',
          reason: 'size',
          bytes: spool.receivedBytes,
        });
      }
      if (received.hops > this.options.relay.maxReceived) {
        await forwarder.abandon();
        return answer(REPLIES.loop(received.hops), {
          action: 'refused',
          reason: 'loop',
          hops: received.hops,
        });
      }

      if (queue) {
        const q = await queue.accept(spool, {
          mailParams: session.envelope.mailFrom ? paramsOf(session.envelope.mailFrom) : {},
          recipients: session.envelope.rcptTo.map((a) => ({ address: a.address, params: paramsOf(a) })),
          xforward: xforwardOf(session, this.options.relay.nextHopOptions),
        });
        return answer(q.reply, { action: q.action, reason: q.reason, bytes: spool.size });
      }
      // No controller: the connection closed before its message was read to the end.
      const gone = this.aborts.get(session.id)?.signal ?? AbortSignal.abort();
      const evaluation = await evaluateUnderDeadline(this.deadline, spool, forwarder, started, gone);
      if (gone.aborted) {
        // Nobody hears our reply: hand nothing on, the client still holds the message.
        await forwarder.abandon();
        return answer(REPLIES.localError(msgId), {
          action: 'none',
          reason: 'client-gone',
          bytes: spool.size,
        });
      }
      if (evaluation === 'deadline') {
        await forwarder.abandon();
        return answer(REPLIES.deadline(msgId), { action: 'tempfail', reason: 'deadline', bytes: spool.size });
      }
      if (evaluation instanceof Error) {
        await forwarder.abandon();
        log.error({ event: 'relay.evaluate_failed', err: evaluation.message }, 'evaluation failed');
        return answer(REPLIES.localError(msgId), {
          action: 'tempfail',
          reason: 'internal',
          bytes: spool.size,
        });
      }
      const summary = {
        action: evaluation.decision.action,
        reason: evaluation.decision.reason,
        verdict: evaluation.decision.verdict,
        threats: evaluation.decision.threats,
        outcomes: describeOutcomes(evaluation.outcomes),
        ...(evaluation.quarantineId !== undefined ? { quarantineId: evaluation.quarantineId } : {}),
        bytes: spool.size,
        scanMs: evaluation.ms,
      };
      const refusal = decisionReply(evaluation, { rejectText: this.options.relay.rejectText });
      if (refusal !== undefined) {
        await forwarder.abandon();
        return answer(refusal, summary);
      }

      // The spool is receiveMessage's CRLF-normalised copy, and the added fields end in CRLF.
      const replies = await forwarder.deliver(
        () =>
          rewriteHeaders(spool.iterate(), { prepend: evaluation.headers, strip: evaluation.stripHeaders }),
        msgId,
        { crlf: true },
      );
      const nextHop = replies.map((r) => nextHopReply(r, msgId));
      if (lmtp && replies.length === recipients.length && recipients.length > 1) {
        return answer(nextHop, { ...summary, nextHop: nextHop.map((r) => r.code) });
      }
      const one = nextHopReply(combineReplies(replies), msgId);
      return answer(one, { ...summary, nextHop: one.code });
    } finally {
      spool.dispose();
      this.busy.delete(session.id);
      // Shutting down: once smtp-server has written this reply, the session is idle; end it.
      if (this.closing !== undefined) setImmediate(() => this.closeIdle());
    }
  }
}

function paramsOf(address: SMTPServerAddress): Params {
  const out: Record<string, string | true> = {};
  if (address.args) for (const [k, v] of Object.entries(address.args)) out[k.toUpperCase()] = v;
  return out;
}
