import { EventEmitter } from 'node:events';
import type net from 'node:net';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { RelayConfig } from '../config/relay.js';
import { isSandgateError } from '../core/errors.js';
import { newMsgId } from '../core/ids.js';
import { lazyChild, type Logger } from '../core/logger.js';
import type { Envelope } from '../core/message.js';
import { replyToData, type DataCallback } from './data-reply.js';
import { NetworkList, normaliseAddress } from '../config/networks.js';
import { receiveMessage, type DataStream, type ReceivedMessage } from './receive.js';
import type { DataOutcome, RelayDataHandler, RelayTransaction } from './relay-data.js';
import { RelaySmtpServer } from './relay-smtp-server.js';
import { REPLIES, toError, toText } from './replies.js';

/** What the relay is built from: its configuration and collaborators the composition root made. */
export interface RelayServerOptions {
  readonly relay: RelayConfig;
  /** Inline (src/smtp/inline.ts) or queue mode (src/smtp/queue/queue-relay.ts). */
  readonly handler: RelayDataHandler;
  readonly log: Logger;
  /** Directory for file spools. */
  readonly spoolDir: string;
  readonly maxMessageSize: number;
  readonly memorySpoolThreshold: number;
  /** Inbound STARTTLS: the key and certificate (read by the composition root); absent: not offered. */
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer };
  readonly now?: () => number;
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
  private readonly handler: RelayDataHandler;
  private readonly allowed: NetworkList;
  /** Sessions whose message is between DATA and our reply. */
  private readonly busy = new Set<string>();
  /**
   * One per connection, aborted when its client goes away, so an evaluation can stop early and
   * its message is not handed on (the client did not get our reply and will send it again).
   * Per connection, not per message: creating an AbortSignal costs several µs.
   */
  private readonly aborts = new Map<string, AbortController>();
  private readonly now: () => number;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: RelayServerOptions) {
    super();
    const relay = options.relay;
    this.now = options.now ?? Date.now;
    this.handler = options.handler;
    this.allowed = new NetworkList(relay.allowedClients);
    const trusted = new NetworkList(relay.trustedPeers);
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
        disabledCommands: options.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
        ...(options.tls ?? {}),
        hideDSN: false,
        // Believed only from trusted peers: RelaySmtpServer checks them against relay.trustedPeers.
        useXForward: true,
        useXClient: true,
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
    return this.handler.describe;
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
    }).then(() => this.handler.close());
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

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: Callback): void {
    this.handler.mail(session, address);
    cb();
  }

  private async onRcptTo(
    address: SMTPServerAddress,
    session: SMTPServerSession,
    cb: Callback,
  ): Promise<void> {
    const refusal = await this.handler.rcpt(session, address);
    cb(refusal ? toError(refusal) : null);
  }

  private async onClose(session: SMTPServerSession): Promise<void> {
    const controller = this.aborts.get(session.id);
    this.aborts.delete(session.id);
    // Only a message in flight listens; an abort makes a DOMException and its stack trace.
    if (this.busy.has(session.id)) controller?.abort();
    await this.handler.closeSession(session);
  }

  /**
   * DATA in phases, each returning our answer or going on: receive the message whole, check the
   * limits every mode has (size, loop), then the mode's own handling. One exit: a message that was
   * not handed on is abandoned at the next hop, the answer goes out and is logged, the spool goes.
   */
  private async onData(
    stream: SMTPServerDataStream,
    session: SMTPServerSession,
    cb: DataCallback,
  ): Promise<void> {
    const started = this.now();
    const msgId = newMsgId(started);
    this.busy.add(session.id);
    this.stats.transactions++;
    const recipients = this.handler.recipients(session).length;
    let received: ReceivedMessage | undefined;
    let outcome: DataOutcome;
    try {
      const got = await this.receive(stream, session, msgId);
      if ('reply' in got) {
        outcome = got;
      } else {
        received = got;
        outcome =
          this.limits(received) ??
          (await this.handler.data(this.transaction(session, msgId, started, received)));
      }
      if (!outcome.handedOn) await this.handler.abandon(session);
    } finally {
      received?.spool.dispose();
      this.busy.delete(session.id);
    }
    const line = { ms: this.now() - started, recipients, code: codeOf(outcome), ...outcome.summary };
    this.options.log.info({ cid: session.id, msgId, event: 'relay.message', ...line }, 'message');
    queueMicrotask(() => this.emit('message', { msgId, ...line }));
    replyToData(cb, outcome.reply);
    // Shutting down: once smtp-server has written this reply, the session is idle; end it.
    if (this.closing !== undefined) setImmediate(() => this.closeIdle());
  }

  /** The message, read whole into a spool; or the answer when the client went away or the spool failed. */
  private async receive(
    stream: DataStream,
    session: SMTPServerSession,
    msgId: string,
  ): Promise<ReceivedMessage | DataOutcome> {
    const envelope: Envelope = {
      sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      recipients: this.handler.recipients(session),
      clientAddress: normaliseAddress(session.remoteAddress),
      ...(session.hostNameAppearsAs ? { heloName: session.hostNameAppearsAs } : {}),
      frontEnd: 'relay',
    };
    try {
      return await receiveMessage(stream, {
        msgId,
        envelope,
        dir: this.options.spoolDir,
        memoryThreshold: this.options.memorySpoolThreshold,
        maxBytes: this.options.maxMessageSize,
      });
    } catch (err) {
      // The client went away before its final dot (or our spool failed): nothing is handed on.
      const reason = isSandgateError(err) ? err.code : 'client-gone';
      return { reply: REPLIES.localError(msgId), summary: { action: 'none', reason }, handedOn: false };
    }
  }

  /** Limits every mode enforces: size (552) and the loop guard (554). */
  private limits(received: ReceivedMessage): DataOutcome | undefined {
    if (received.sizeExceeded) {
      return {
        reply: REPLIES.tooBig(this.options.maxMessageSize),
        summary: { action: 'refused', reason: 'size', bytes: received.spool.receivedBytes },
        handedOn: false,
      };
    }
    if (received.hops > this.options.relay.maxReceived) {
      return {
        reply: REPLIES.loop(received.hops),
        summary: { action: 'refused', reason: 'loop', hops: received.hops },
        handedOn: false,
      };
    }
    return undefined;
  }

  private transaction(
    session: SMTPServerSession,
    msgId: string,
    started: number,
    received: ReceivedMessage,
  ): RelayTransaction {
    return {
      session,
      msgId,
      started,
      received,
      // No controller: the connection closed before its message was read to the end.
      gone: this.aborts.get(session.id)?.signal ?? AbortSignal.abort(),
      log: lazyChild(this.options.log, { cid: session.id, msgId }),
    };
  }
}

function codeOf(outcome: DataOutcome): number {
  const r = outcome.reply;
  return 'code' in r ? r.code : (r[0]?.code ?? 0);
}
