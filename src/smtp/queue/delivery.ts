import type { RelayQueueStore } from '../../core/ports.js';
import type { QueueItem, QueueRecipient, QueueScan, RecipientState } from '../../core/state-records.js';
import { rewriteHeaders } from '../headers.js';
import type { NextHopSession } from '../next-hop.js';
import { formatReply, type Reply } from '../smtp-client.js';

/** One delivery attempt of a queue item: filled in as the next hop answers, so a throw keeps what it said. */
export interface DeliveryAttempt {
  /** Per-recipient results, recorded by the worker right after the attempt. */
  readonly results: Array<{ idx: number; state: RecipientState; reply: string }>;
  /** The last temporary refusal or error, for the retry record. */
  temporary: string | undefined;
}

/**
 * One transaction with the next hop for an item's pending recipients: XFORWARD, MAIL, a RCPT each,
 * then DATA to the accepted ones (RSET when none was accepted). A 2xx reply makes a recipient
 * delivered, a 5xx failed, anything else leaves it pending.
 */
export async function sendToNextHop(
  session: NextHopSession,
  item: QueueItem,
  pending: readonly QueueRecipient[],
  scan: QueueScan,
  store: RelayQueueStore,
  attempt: DeliveryAttempt,
): Promise<void> {
  const set = (r: QueueRecipient, reply: Reply) =>
    attempt.results.push({ idx: r.idx, state: classify(reply), reply: formatReply(reply).slice(0, 500) });
  await session.xforward(new Map(Object.entries(item.envelope.xforward)));
  const mail = await session.mail(item.envelope.sender, item.envelope.mailParams);
  const accepted: QueueRecipient[] = [];
  if (mail.code >= 300) {
    for (const r of pending) set(r, mail);
    attempt.temporary = formatReply(mail);
  } else {
    for (const r of pending) {
      const reply = await session.rcpt(r.address, r.params);
      if (reply.code < 300) accepted.push(r);
      else {
        set(r, reply);
        attempt.temporary = formatReply(reply);
      }
    }
  }
  if (accepted.length === 0) {
    await session.reset();
  } else {
    const message = store.message(item);
    const replies = await session.data(
      rewriteHeaders(message, { prepend: scan.headers, strip: scan.stripHeaders }),
      accepted.map((r) => r.address),
      item.id,
    );
    accepted.forEach((r, i) => {
      const reply = (replies.length === accepted.length ? replies[i] : replies[0]) ?? replies[0];
      if (reply !== undefined) set(r, reply);
      if (reply !== undefined && reply.code >= 400 && reply.code < 500)
        attempt.temporary = formatReply(reply);
    });
  }
}

function classify(r: Reply): RecipientState {
  if (r.code >= 200 && r.code < 300) return 'delivered';
  if (r.code >= 500 && r.code < 600) return 'failed';
  return 'pending';
}
