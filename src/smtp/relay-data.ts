import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { Logger } from '../core/logger.js';
import type { ReceivedMessage } from './receive.js';
import type { SmtpReply } from './replies.js';
import type { Params } from './next-hop.js';

/** One message between DATA and our reply, after the relay received it whole and within its limits. */
export interface RelayTransaction {
  readonly session: SMTPServerSession;
  readonly msgId: string;
  /** When DATA started (the relay deadline counts from here). */
  readonly started: number;
  readonly received: ReceivedMessage;
  /** Aborted when the client goes away: nobody would hear our reply. */
  readonly gone: AbortSignal;
  readonly log: Logger;
}

/** Our answer to the final dot, and the fields of the `relay.message` summary line. */
export interface DataOutcome {
  readonly reply: SmtpReply | readonly SmtpReply[];
  readonly summary: { readonly action: string; readonly reason: string } & Readonly<Record<string, unknown>>;
  /** The message went to the next hop (or into the queue): nothing to abandon there. */
  readonly handedOn: boolean;
}

/**
 * What the relay does with a transaction: inline (lockstep with the next hop, the verdict before
 * our reply; src/smtp/inline.ts) or queue mode (answered here, delivered later;
 * src/smtp/queue/queue-relay.ts). The SMTP session plumbing, the receiving and the limits that
 * hold for both are the RelayServer's.
 */
export interface RelayDataHandler {
  /** Describes where mail goes, for the start-up log line. */
  readonly describe: string;
  mail(session: SMTPServerSession, address: SMTPServerAddress): void;
  /** Undefined: the recipient is accepted; else the refusal to give the client. */
  rcpt(session: SMTPServerSession, address: SMTPServerAddress): Promise<SmtpReply | undefined>;
  /** The recipients of the transaction as the message will be handed on. */
  recipients(session: SMTPServerSession): readonly string[];
  data(tx: RelayTransaction): Promise<DataOutcome>;
  /** The transaction ends without the message handed on (refused, failed, client gone). */
  abandon(session: SMTPServerSession): Promise<void>;
  /** The client's connection closed. */
  closeSession(session: SMTPServerSession): Promise<void>;
  /** Shutting down, after the last transaction. */
  close(): Promise<void>;
}

/** MAIL/RCPT parameters as the next hop gets them, keyed upper case. */
export function paramsOf(address: SMTPServerAddress): Params {
  const out: Record<string, string | true> = {};
  if (address.args) for (const [k, v] of Object.entries(address.args)) out[k.toUpperCase()] = v;
  return out;
}
