import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { RelayConfig } from '../config/relay.js';
import type { Evaluation, Evaluator } from '../core/evaluation.js';
import { lazyChild, type Logger } from '../core/logger.js';
import { describeOutcomes } from '../core/outcome.js';
import { clientAttributesOf } from './client-attributes.js';
import { evaluateUnderDeadline, type DeadlineContext } from './evaluate-under-deadline.js';
import { Forwarder } from './forwarder.js';
import { rewriteHeaders } from './headers.js';
import type { NextHopConnector } from './next-hop.js';
import { paramsOf, type DataOutcome, type RelayDataHandler, type RelayTransaction } from './relay-data.js';
import { combineReplies, decisionReply, nextHopReply, passBack, REPLIES, type SmtpReply } from './replies.js';
import { SessionPool } from './session-pool.js';

export interface InlineRelayOptions {
  readonly relay: RelayConfig;
  readonly evaluator: Evaluator;
  /** The next hop, built by the composition root (its CA and password files read there). */
  readonly connector: NextHopConnector;
  readonly log: Logger;
  readonly now?: () => number;
}

/**
 * Inline mode: each client session drives a next-hop session in lockstep (MAIL and RCPT are the
 * next hop's answers), the message is judged by the core under relay.deadline, and handed on only
 * when the verdict says deliver; our reply to the final dot is the next hop's.
 */
export class InlineRelay implements RelayDataHandler {
  readonly describe: string;
  /** Idle next-hop sessions, shared by the client sessions between their transactions. */
  private readonly pool: SessionPool;
  private readonly forwarders = new Map<string, Forwarder>();
  private readonly deadline: DeadlineContext;
  private readonly lmtp: boolean;

  constructor(private readonly o: InlineRelayOptions) {
    const hop = o.relay.nextHopOptions;
    this.describe = o.connector.describe;
    this.pool = new SessionPool(o.connector, Math.max(1000, Math.min(hop.keepAlive, 30_000)));
    this.deadline = { evaluator: o.evaluator, deadlineMs: o.relay.deadline, now: o.now ?? Date.now };
    this.lmtp = o.relay.protocol === 'lmtp';
  }

  mail(session: SMTPServerSession, address: SMTPServerAddress): void {
    // MAIL reaches the next hop with the first RCPT.
    this.forwarder(session).mail(
      address.address,
      paramsOf(address),
      clientAttributesOf(session, this.o.relay.nextHopOptions),
    );
  }

  async rcpt(session: SMTPServerSession, address: SMTPServerAddress): Promise<SmtpReply | undefined> {
    const r = await this.forwarder(session).rcpt(address.address, paramsOf(address));
    return r.code < 300 ? undefined : passBack(r);
  }

  recipients(session: SMTPServerSession): readonly string[] {
    return [...this.forwarder(session).recipients];
  }

  /** Judge, then hand on: each phase returns the outcome or passes the evaluation on. */
  async data(tx: RelayTransaction): Promise<DataOutcome> {
    const forwarder = this.forwarder(tx.session);
    const judged = await this.judge(tx, forwarder);
    return 'reply' in judged ? judged : this.handOn(tx, forwarder, judged);
  }

  async abandon(session: SMTPServerSession): Promise<void> {
    await this.forwarders.get(session.id)?.abandon();
  }

  async closeSession(session: SMTPServerSession): Promise<void> {
    const f = this.forwarders.get(session.id);
    this.forwarders.delete(session.id);
    await f?.close();
  }

  async close(): Promise<void> {
    await Promise.all([...this.forwarders.values()].map((f) => f.close()));
    this.forwarders.clear();
    await this.pool.close();
  }

  private forwarder(session: SMTPServerSession): Forwarder {
    let f = this.forwarders.get(session.id);
    if (f === undefined) {
      f = new Forwarder({
        connector: this.o.connector,
        pool: this.pool,
        keepAliveMs: this.o.relay.nextHopOptions.keepAlive,
        log: lazyChild(this.o.log, { cid: session.id }),
      });
      this.forwarders.set(session.id, f);
    }
    return f;
  }

  /** The verdict under relay.deadline; an outcome when the message is not to be handed on. */
  private async judge(tx: RelayTransaction, forwarder: Forwarder): Promise<Evaluation | DataOutcome> {
    const { spool } = tx.received;
    const evaluation = await evaluateUnderDeadline(this.deadline, spool, forwarder, tx.started, tx.gone);
    const bytes = spool.size;
    if (tx.gone.aborted) {
      // Nobody hears our reply: hand nothing on, the client still holds the message.
      return refused(REPLIES.localError(tx.msgId), { action: 'none', reason: 'client-gone', bytes });
    }
    if (evaluation === 'deadline') {
      return refused(REPLIES.deadline(tx.msgId), { action: 'tempfail', reason: 'deadline', bytes });
    }
    if (evaluation instanceof Error) {
      tx.log.error({ event: 'relay.evaluate_failed', err: evaluation.message }, 'evaluation failed');
      return refused(REPLIES.localError(tx.msgId), { action: 'tempfail', reason: 'internal', bytes });
    }
    const refusal = decisionReply(evaluation, { rejectText: this.o.relay.rejectText });
    return refusal !== undefined ? refused(refusal, summaryOf(evaluation, bytes)) : evaluation;
  }

  /** The next hop gets the message with our headers; our reply is its reply. */
  private async handOn(
    tx: RelayTransaction,
    forwarder: Forwarder,
    evaluation: Evaluation,
  ): Promise<DataOutcome> {
    const { spool } = tx.received;
    // Counted before the hand-on, which ends the transaction (and its recipient list).
    const recipients = forwarder.recipients.length;
    // The spool is receiveMessage's CRLF-normalised copy, and the added fields end in CRLF.
    const replies = await forwarder.deliver(
      () => rewriteHeaders(spool, { prepend: evaluation.headers, strip: evaluation.stripHeaders }),
      tx.msgId,
      { crlf: true },
    );
    const summary = summaryOf(evaluation, spool.size);
    if (this.lmtp && replies.length === recipients && recipients > 1) {
      const each = replies.map((r) => nextHopReply(r, tx.msgId));
      return { reply: each, summary: { ...summary, nextHop: each.map((r) => r.code) }, handedOn: true };
    }
    const one = nextHopReply(combineReplies(replies), tx.msgId);
    return { reply: one, summary: { ...summary, nextHop: one.code }, handedOn: true };
  }
}

function refused(reply: SmtpReply, summary: DataOutcome['summary']): DataOutcome {
  return { reply, summary, handedOn: false };
}

function summaryOf(ev: Evaluation, bytes: number): DataOutcome['summary'] {
  return {
    action: ev.decision.action,
    reason: ev.decision.reason,
    verdict: ev.decision.verdict,
    threats: ev.decision.threats,
    outcomes: describeOutcomes(ev.outcomes),
    ...(ev.quarantineId !== undefined ? { quarantineId: ev.quarantineId } : {}),
    bytes,
    scanMs: ev.ms,
  };
}
