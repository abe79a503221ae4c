import type { RelayQueueConfig } from '../../config/relay.js';
import { isSandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { MessageSource } from '../../core/message.js';
import type { RelayQueueStore } from '../../core/ports.js';
import type { QueueParams } from '../../core/state-records.js';
import type { SmtpReply } from '../replies.js';

/** What the relay tells the queue about a transaction besides the bytes. */
export interface QueueAcceptMeta {
  readonly mailParams: QueueParams;
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly params: QueueParams }>;
  readonly xforward: ReadonlyMap<string, string>;
}

/** The queue as the SMTP server sees it (relay.mode: queue). */
export interface QueueFrontEnd {
  /** The reply to a RCPT when it must be refused (limits, back-pressure); undefined: accept. */
  rcpt(alreadyAccepted: number): SmtpReply | undefined;
  /** Queues the message durably; 250 only once it is on disk and indexed. */
  accept(message: MessageSource, meta: QueueAcceptMeta): Promise<QueueAcceptResult>;
}

export interface QueueAcceptResult {
  readonly reply: SmtpReply;
  /** 'queued', or 'tempfail' (not accepted). */
  readonly action: 'queued' | 'tempfail';
  readonly reason: string;
}

export const QUEUE_REPLIES = {
  full: { code: 452, enhanced: '4.3.1', text: 'Insufficient system storage: queue full, try again later' },
  tooManyRecipients: { code: 452, enhanced: '4.5.3', text: 'Too many recipients' },
} as const satisfies Record<string, SmtpReply>;

/**
 * The accepting half of queue mode: RCPT is answered locally (the relay now owns delivery), within
 * the recipient limit and the queue's back-pressure thresholds; DATA is answered 250 only after the
 * store has the message and its envelope on disk and indexed, 451 on any write error.
 */
export class QueueIntake implements QueueFrontEnd {
  constructor(
    private readonly store: RelayQueueStore,
    private readonly limits: Pick<RelayQueueConfig, 'maxMessages' | 'maxBytes' | 'maxRecipients'>,
    private readonly onQueued: (id: string) => void,
    private readonly log: Logger,
  ) {}

  rcpt(alreadyAccepted: number): SmtpReply | undefined {
    if (alreadyAccepted >= this.limits.maxRecipients) return QUEUE_REPLIES.tooManyRecipients;
    if (this.full()) {
      this.log.warn({ event: 'queue.full', ...this.store.load }, 'queue full: refusing RCPT with 452');
      return QUEUE_REPLIES.full;
    }
    return undefined;
  }

  async accept(message: MessageSource, meta: QueueAcceptMeta): Promise<QueueAcceptResult> {
    const id = message.msgId;
    if (this.full()) {
      return {
        reply: {
          code: 451,
          enhanced: '4.3.1',
          text: `Insufficient system storage: queue full, try again later (${id})`,
        },
        action: 'tempfail',
        reason: 'queue-full',
      };
    }
    const env = message.envelope;
    try {
      const prepared = await this.store.prepare(message, {
        sender: env.sender,
        mailParams: meta.mailParams,
        recipients: meta.recipients,
        ...(env.clientAddress !== undefined ? { clientAddress: env.clientAddress } : {}),
        ...(env.heloName !== undefined ? { heloName: env.heloName } : {}),
        xforward: Object.fromEntries(meta.xforward),
      });
      await this.store.insert(prepared);
    } catch (err) {
      this.log.error(
        {
          event: 'queue.write_failed',
          msgId: id,
          code: isSandgateError(err) ? err.code : undefined,
          err:
            err instanceof Error
              ? err.cause instanceof Error
                ? err.cause.message
                : err.message
              : String(err),
        },
        'cannot queue the message; answering 451',
      );
      return {
        reply: {
          code: 451,
          enhanced: '4.3.0',
          text: `Local error: cannot queue the message, try again later (${id})`,
        },
        action: 'tempfail',
        reason: 'queue-write',
      };
    }
    this.onQueued(id);
    return {
      reply: { code: 250, enhanced: '2.0.0', text: `Ok: queued as ${id}` },
      action: 'queued',
      reason: 'queued',
    };
  }

  private full(): boolean {
    const { messages, bytes } = this.store.load;
    // Soft limits, like an MTA's: a message that starts below them is taken whole.
    return messages >= this.limits.maxMessages || bytes >= this.limits.maxBytes;
  }
}
