import { SandgateError } from '../core/errors.js';
import type { DeliveryReceipt, DeliveryRequest, MailDelivery } from '../core/ports.js';
import type { NextHopConnector } from './next-hop.js';
import { formatReply, type Reply } from './smtp-client.js';

/**
 * The core's delivery port over a next-hop connector: the relay's own SMTP/LMTP client (with its
 * TLS policy), directory and Submitted-directory delivery, for quarantine releases and notices.
 * One session per message: MAIL, a RCPT each, DATA to the accepted recipients, QUIT.
 */
export function connectorDelivery(connector: NextHopConnector): MailDelivery {
  return {
    describe: connector.describe,
    async deliver(request: DeliveryRequest): Promise<DeliveryReceipt> {
      const session = await connector.connect(request.signal);
      try {
        const accepted: string[] = [];
        const rejected: string[] = [];
        const [first, ...rest] = request.recipients;
        if (first === undefined) throw refused(connector, 'no recipient to deliver to');
        const { mail, rcpt } = await session.mailRcpt(request.sender, {}, first, {});
        if (rcpt === undefined) throw refused(connector, `MAIL refused: ${formatReply(mail)}`, mail);
        const note = (address: string, reply: Reply) =>
          (reply.code < 300 ? accepted : rejected).push(address);
        note(first, rcpt);
        for (const r of rest) note(r, await session.rcpt(r, {}));
        if (accepted.length === 0) {
          await session.reset().catch(() => undefined);
          throw refused(connector, `every recipient was refused: ${formatReply(rcpt)}`, rcpt);
        }
        const replies = await session.data(request.message(), accepted, request.msgId);
        // LMTP answers each accepted recipient after the message; SMTP answers once for all.
        const perRecipient = replies.length === accepted.length && accepted.length > 1;
        const delivered = accepted.filter(
          (r, i) => ((perRecipient ? replies[i] : replies[0])?.code ?? 554) < 300,
        );
        rejected.push(...accepted.filter((r) => !delivered.includes(r)));
        if (delivered.length === 0) {
          const refusal = replies.find((r) => r.code >= 300) ?? replies[0];
          throw refused(
            connector,
            `the message was refused: ${refusal ? formatReply(refusal) : 'no reply'}`,
            refusal,
          );
        }
        return {
          to: connector.describe,
          accepted: delivered,
          rejected,
          response: replies.map(formatReply).join('; '),
        };
      } finally {
        await session.close().catch(() => undefined);
      }
    },
  };
}

function refused(connector: NextHopConnector, what: string, reply?: Reply): SandgateError {
  return new SandgateError('ERR_DELIVERY_REFUSED', `${connector.describe}: ${what}`, {
    details: { target: connector.describe, ...(reply !== undefined ? { responseCode: reply.code } : {}) },
  });
}
