import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { RelayConfig } from '../../config/relay.js';
import { xforwardOf } from '../client-attributes.js';
import { paramsOf, type DataOutcome, type RelayDataHandler, type RelayTransaction } from '../relay-data.js';
import type { SmtpReply } from '../replies.js';
import type { QueueFrontEnd } from './intake.js';

/**
 * Queue mode: RCPT is answered here within the queue's limits, and DATA is answered 250 once the
 * message is durably queued (the worker judges and delivers it later). Nothing of the inline
 * relay's next-hop machinery exists in this mode.
 */
export class QueueRelay implements RelayDataHandler {
  readonly describe: string;

  constructor(
    private readonly intake: QueueFrontEnd,
    private readonly relay: RelayConfig,
    /** Where the worker delivers (for the start-up log line). */
    nextHop: string,
  ) {
    this.describe = `queue -> ${nextHop}`;
  }

  mail(): void {
    // The envelope is taken at DATA.
  }

  rcpt(session: SMTPServerSession): Promise<SmtpReply | undefined> {
    return Promise.resolve(this.intake.rcpt(session.envelope.rcptTo.length));
  }

  recipients(session: SMTPServerSession): readonly string[] {
    return session.envelope.rcptTo.map((a) => a.address);
  }

  async data(tx: RelayTransaction): Promise<DataOutcome> {
    const { session } = tx;
    const { spool } = tx.received;
    const q = await this.intake.accept(spool, {
      mailParams: session.envelope.mailFrom ? paramsOf(session.envelope.mailFrom) : {},
      recipients: session.envelope.rcptTo.map((a: SMTPServerAddress) => ({
        address: a.address,
        params: paramsOf(a),
      })),
      xforward: xforwardOf(session, this.relay.nextHopOptions),
    });
    return {
      reply: q.reply,
      summary: { action: q.action, reason: q.reason, bytes: spool.size },
      handedOn: q.action === 'queued',
    };
  }

  abandon(): Promise<void> {
    return Promise.resolve();
  }

  closeSession(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
