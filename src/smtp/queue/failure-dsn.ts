import { newMsgId } from '../../core/ids.js';
import type { MessageSource } from '../../core/message.js';
import { BufferMessage } from '../../mime/spool.js';
import type { RelayQueueStore } from '../../core/ports.js';
import type { QueueItem, QueueRecipient } from '../../core/state-records.js';
import { buildDsn } from './dsn.js';

const HEADER_LIMIT = 64 * 1024;

/** Where the DSN says it comes from and what it failed to reach. */
export interface FailureDsnContext {
  /** Reporting-MTA: relay.queue.reportingMta, else the relay's hostname. */
  readonly reportingMta: string;
  /** The next hop, reported as Remote-MTA for the replies it gave. */
  readonly nextHop: string;
  readonly now: number;
}

/**
 * Builds the DSN for the failed recipients that asked for one (`notify`) and queues it to the
 * envelope sender, like any message, in the same transaction that removes the item. Returns the
 * DSN's own queue id.
 */
export async function queueFailureDsn(
  store: RelayQueueStore,
  item: QueueItem,
  notify: readonly QueueRecipient[],
  { reportingMta, nextHop, now }: FailureDsnContext,
): Promise<string> {
  const bytes = await buildDsn({
    reportingMta,
    to: item.envelope.sender,
    msgId: item.id,
    ...(typeof item.envelope.mailParams.ENVID === 'string'
      ? { envelopeId: xtextDecode(item.envelope.mailParams.ENVID) }
      : {}),
    arrivalDate: item.createdAt,
    lastAttempt: now,
    originalHeaders: await headerBlock(store.message(item)),
    recipients: notify.map((r) => ({
      address: r.address,
      ...(typeof r.params.ORCPT === 'string' ? { orcpt: xtextDecode(r.params.ORCPT) } : {}),
      status: statusOf(r.reply),
      ...(r.reply !== undefined ? { diagnostic: r.reply } : {}),
      ...(r.reply !== undefined && !r.reply.startsWith('sandgate:') ? { remoteMta: nextHop } : {}),
    })),
    why: notify.some((r) => r.reply?.startsWith('sandgate:')) ? 'expired' : 'refused',
  });
  const dsnId = newMsgId(now);
  const envelope = {
    sender: '',
    mailParams: {},
    recipients: [{ address: item.envelope.sender, params: {} }],
    xforward: {},
  };
  const prepared = await store.prepare(
    new BufferMessage(dsnId, { sender: '', recipients: [item.envelope.sender], frontEnd: 'relay' }, bytes),
    envelope,
    { kind: 'dsn', now },
  );
  await store.insert(prepared, { remove: item.id });
  return dsnId;
}

/**
 * Past relay.queue.maxLifetime: every pending recipient fails with our own 4.4.7 reply (the
 * "sandgate:" prefix makes the DSN say 'expired' and name no Remote-MTA).
 */
export function expirePending(
  store: RelayQueueStore,
  item: QueueItem,
  error: string,
  now: number,
): Promise<void> {
  const reply = `sandgate: delivery time expired (4.4.7); last error: ${error}`.slice(0, 500);
  return store.record(
    item.id,
    item.recipients.filter((r) => r.state === 'pending').map((r) => ({ idx: r.idx, state: 'failed', reply })),
    now,
  );
}

/** NOTIFY absent: failures are reported (RFC 3461 default); NOTIFY=NEVER or without FAILURE: not. */
export function wantsFailureNotice(params: Readonly<Record<string, string | true>>): boolean {
  const n = params.NOTIFY;
  if (typeof n !== 'string') return true;
  return n.toUpperCase().split(',').includes('FAILURE');
}

/** The enhanced status of a stored reply ("550 5.1.1 ..."), else 5.0.0; 4.4.7 for our expiry. */
function statusOf(reply: string | undefined): string {
  if (reply?.startsWith('sandgate:')) return '4.4.7';
  const m = /^\d{3} ([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply ?? '');
  const s = m?.[1];
  return s !== undefined && s.startsWith('5.') ? s : '5.0.0';
}

/** RFC 3461 xtext (+XX hex escapes), as ORCPT and ENVID arrive. */
function xtextDecode(s: string): string {
  return s.replace(/\+([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** The header block of a message (up to 64 KB), for the DSN's text/rfc822-headers part. */
async function headerBlock(message: MessageSource): Promise<string> {
  let head = '';
  const stream = message.open({ end: Math.min(message.size, HEADER_LIMIT) });
  for await (const chunk of stream) {
    head += (chunk as Buffer).toString('latin1');
    const end = head.indexOf('\r\n\r\n');
    if (end >= 0) {
      stream.destroy();
      return Buffer.from(head.slice(0, end + 2), 'latin1').toString('utf8');
    }
  }
  return Buffer.from(head, 'latin1').toString('utf8');
}
