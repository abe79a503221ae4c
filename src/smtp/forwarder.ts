import { isSandgateError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { NextHopConnector, NextHopSession, Params } from './next-hop.js';
import type { SessionPool } from './session-pool.js';
import type { Reply } from './smtp-client.js';

const UNAVAILABLE: Reply = { code: 451, enhanced: '4.4.1', lines: ['Next hop unavailable, try again later'] };
const LOST: Reply = {
  code: 451,
  enhanced: '4.4.2',
  lines: ['Connection to the next hop lost, try again later'],
};
const CHANGED: Reply = {
  code: 451,
  enhanced: '4.4.2',
  lines: ['Next hop changed its answer on reconnect, try again later'],
};

/** Who the client is, as the next hop should see it. */
export interface ClientAttributes {
  /** XFORWARD attributes (empty: send none). */
  readonly xforward: ReadonlyMap<string, string>;
  /** XCLIENT attributes; undefined unless relay.nextHopOptions.xclient is on. */
  readonly xclient?: ReadonlyMap<string, string>;
}

export interface ForwarderOptions {
  readonly connector: NextHopConnector;
  /**
   * Next-hop sessions shared by all client sessions: one is taken for each transaction and given
   * back when it ends, so an idle client connection (an MTA's connection cache) holds no session
   * at the next hop. Without a pool, each client session keeps its own next-hop connection.
   */
  readonly pool?: Pick<SessionPool, 'acquire' | 'release'>;
  /** NOOP interval while a message is being scanned; 0: never. */
  readonly keepAliveMs: number;
  readonly log: Logger;
}

/**
 * One client session's link to the next hop, driven in lockstep: each RCPT goes to the next hop
 * at once and its reply is the client's reply, so a recipient the next hop refuses is refused to
 * the client too. MAIL is answered here and goes to the next hop together with the first RCPT
 * (one round trip when it offers PIPELINING); a next hop that refuses MAIL has its refusal given
 * to every RCPT of the transaction. DATA goes on only after the verdict. The next-hop session is
 * held from the first RCPT to the end of the transaction; with a pool it then goes back for any
 * client session to use, without one it lives as long as the client's connection.
 */
export class Forwarder {
  private session: NextHopSession | undefined;
  private sender: { address: string; params: Params } | undefined;
  /** MAIL went to the next hop and was accepted: a transaction is open there. */
  private mailSent = false;
  /** The next hop refused this transaction's MAIL: every RCPT gets this reply. */
  private mailRefused: Reply | undefined;
  /** The client sent a new MAIL while a transaction was open at the next hop (after its RSET). */
  private resetDue = false;
  private client: ClientAttributes = { xforward: new Map() };
  private readonly accepted: Array<{ address: string; params: Params }> = [];
  /** The command in flight (a keep-alive NOOP), so the next command waits for it. */
  private busy: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ForwarderOptions) {}

  /** Recipients the next hop accepted in this transaction, in order. */
  get recipients(): readonly string[] {
    return this.accepted.map((r) => r.address);
  }

  /** The client's MAIL: remembered here; it goes to the next hop with the first RCPT. */
  mail(address: string, params: Params, client: ClientAttributes): void {
    // A transaction still open at the next hop: the client sent RSET (smtp-server answers that
    // itself), so end it there too, or the next hop would refuse the next MAIL as nested.
    this.resetDue ||= this.mailSent;
    this.endTransaction();
    this.sender = { address, params };
    this.client = client;
  }

  async rcpt(address: string, params: Params): Promise<Reply> {
    const sender = this.sender;
    if (sender === undefined) return UNAVAILABLE;
    if (this.mailRefused !== undefined) return this.mailRefused;
    return this.guard(async () => {
      let r: Reply;
      if (this.mailSent) {
        const s = this.session;
        if (!s?.usable) return UNAVAILABLE;
        r = await s.rcpt(address, params);
      } else {
        // A session that cannot change its XCLIENT identity serves one transaction only.
        if (this.session !== undefined && !this.session.reusable) await this.drop();
        const s = await this.ensure();
        if (this.resetDue) await s.reset();
        this.resetDue = false;
        await this.introduce(s, this.client);
        const replies = await s.mailRcpt(sender.address, sender.params, address, params);
        if (replies.rcpt === undefined) {
          this.mailRefused = replies.mail;
          this.giveBack();
          return replies.mail;
        }
        this.mailSent = true;
        r = replies.rcpt;
      }
      if (r.code < 300) this.accepted.push({ address, params });
      return r;
    }, UNAVAILABLE);
  }

  /**
   * Hands the message on. When the next-hop connection died while we were scanning, reconnects
   * and replays MAIL and the accepted RCPTs first; if the next hop now answers differently, the
   * whole message gets 451 (the sender retries; nothing is half delivered). `crlf`: the message
   * is already CRLF-normalised (the relay's spool), so only dot-stuffing is left for the wire.
   */
  async deliver(
    message: () => AsyncIterable<Buffer>,
    msgId: string,
    options: { readonly crlf?: boolean } = {},
  ): Promise<Reply[]> {
    await this.busy.catch(() => undefined);
    const sender = this.sender;
    if (sender === undefined || this.accepted.length === 0) return [UNAVAILABLE];
    const recipients = this.recipients;
    return this.guardMany(async () => {
      if (!this.session?.usable) {
        this.options.log.info(
          { event: 'relay.next_hop_replay', msgId },
          'next hop connection lost while scanning; replaying the envelope',
        );
        await this.drop();
        const s = await this.ensure();
        await this.introduce(s, this.client);
        const m = await s.mail(sender.address, sender.params);
        if (m.code >= 300) return [CHANGED];
        for (const r of this.accepted) {
          const rr = await s.rcpt(r.address, r.params);
          if (rr.code >= 300) {
            await s.reset().catch(() => undefined);
            return [CHANGED];
          }
        }
      }
      const s = this.session as NextHopSession;
      const replies = await s.data(message(), recipients, msgId, options);
      this.endTransaction();
      // A refused DATA can leave the next hop's transaction open: RSET before it is reused.
      if (replies.some((r) => r.code >= 300)) await s.reset().catch(() => undefined);
      this.giveBack();
      return replies;
    }, LOST);
  }

  /** Ends the next hop's transaction without handing anything on (reject, discard, quarantine, errors). */
  async abandon(): Promise<void> {
    await this.busy.catch(() => undefined);
    const open = this.mailSent;
    this.endTransaction();
    if (!this.session?.usable) return;
    if (!open) {
      this.giveBack();
      return;
    }
    try {
      await this.session.reset();
      this.giveBack();
    } catch {
      await this.drop();
    }
  }

  /** Starts NOOPs to the next hop while a message is scanned; returns the function that stops them. */
  keepAlive(): () => void {
    if (this.options.keepAliveMs <= 0) return () => undefined;
    const timer = setInterval(() => {
      const s = this.session;
      if (!s?.usable) return;
      this.busy = s.noop().catch(() => undefined);
    }, this.options.keepAliveMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  async close(): Promise<void> {
    await this.busy.catch(() => undefined);
    const s = this.session;
    this.session = undefined;
    if (s === undefined) return;
    // Back to the pool only with no transaction open at the next hop; otherwise QUIT.
    if (this.options.pool) this.options.pool.release(s, !this.mailSent && !this.resetDue);
    else await s.close().catch(() => undefined);
  }

  /**
   * Tells the next hop who the client is, before MAIL: XCLIENT when configured and offered (the
   * session then is the client's, XFORWARD is not needed), else, or when XCLIENT is refused,
   * XFORWARD (which rides along with MAIL).
   */
  private async introduce(s: NextHopSession, client: ClientAttributes): Promise<void> {
    if (client.xclient !== undefined) {
      const r = await s.xclient(client.xclient);
      if (r.status === 'sent' || r.status === 'unchanged') return;
      if (r.status === 'refused') {
        this.options.log.warn(
          {
            event: 'relay.xclient_refused',
            nextHop: this.options.connector.describe,
            code: r.reply.code,
            reply: r.reply.lines.join(' ').slice(0, 200),
            fallback: client.xforward.size > 0 ? 'xforward' : 'none',
          },
          'next hop refused XCLIENT; passing the client on with XFORWARD where offered',
        );
      }
    }
    await s.xforward(client.xforward);
  }

  private async ensure(): Promise<NextHopSession> {
    if (this.session?.usable) return this.session;
    await this.drop();
    this.session = await (this.options.pool?.acquire() ?? this.options.connector.connect());
    return this.session;
  }

  /** The transaction is over and the session is idle: hand it to the pool (if there is one). */
  private giveBack(): void {
    const s = this.session;
    if (s === undefined || this.options.pool === undefined) return;
    this.session = undefined;
    this.options.pool.release(s, true);
  }

  private async drop(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    if (s === undefined) return;
    if (this.options.pool) this.options.pool.release(s, false);
    else await s.close().catch(() => undefined);
  }

  private async guard(fn: () => Promise<Reply>, fallback: Reply): Promise<Reply> {
    try {
      return await fn();
    } catch (err) {
      this.logFailure(err);
      await this.drop();
      return fallback;
    }
  }

  private async guardMany(fn: () => Promise<Reply[]>, fallback: Reply): Promise<Reply[]> {
    try {
      return await fn();
    } catch (err) {
      this.logFailure(err);
      await this.drop();
      this.endTransaction();
      return [fallback];
    }
  }

  private endTransaction(): void {
    this.sender = undefined;
    this.mailSent = false;
    this.mailRefused = undefined;
    this.accepted.length = 0;
  }

  private logFailure(err: unknown): void {
    this.options.log.warn(
      {
        event: 'relay.next_hop_error',
        nextHop: this.options.connector.describe,
        code: isSandgateError(err) ? err.code : 'ERR_NEXT_HOP_UNAVAILABLE',
        err: err instanceof Error ? err.message : String(err),
      },
      'next hop failed',
    );
  }
}
