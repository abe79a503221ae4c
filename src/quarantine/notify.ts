import { Readable } from 'node:stream';
import type { Logger } from '../core/logger.js';
import type { MailDelivery, QuarantineEntry, QuarantineWriter } from '../core/ports.js';
import { printable } from '../core/text.js';

export interface NotifySettings {
  readonly to: readonly string[];
  readonly from: string;
  readonly adminUrl?: string;
}

/**
 * A QuarantineWriter that, after each item is durably written, sends a short notice to the
 * administrators (never to the sender: forged senders would make it backscatter). The notice goes
 * out in the background through the delivery port; its failure is logged and never changes the
 * message's fate.
 */
export class NotifyingQuarantine implements QuarantineWriter {
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly inner: QuarantineWriter,
    private readonly settings: NotifySettings,
    private readonly delivery: MailDelivery,
    private readonly log: Logger,
  ) {}

  async put(entry: QuarantineEntry): Promise<string> {
    const id = await this.inner.put(entry);
    const task = this.notify(id, entry).finally(() => this.pending.delete(task));
    this.pending.add(task);
    return id;
  }

  /** Waits for notices still being sent (shutdown, tests). */
  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private async notify(id: string, entry: QuarantineEntry): Promise<void> {
    const text = noticeText(id, entry, this.settings);
    try {
      await this.delivery.deliver({
        sender: '',
        recipients: this.settings.to,
        msgId: `notice-${id}`,
        message: () => Readable.from([Buffer.from(text, 'utf8')]),
      });
      this.log.info({ event: 'quarantine.notified', quarantineId: id }, 'administrator notified');
    } catch (err) {
      this.log.warn(
        { event: 'quarantine.notify_failed', quarantineId: id, err },
        'could not notify the administrator',
      );
    }
  }
}

/** The notice: ASCII only, nothing from the message but printable envelope and verdict fields. */
export function noticeText(
  id: string,
  entry: QuarantineEntry,
  s: Pick<NotifySettings, 'to' | 'from' | 'adminUrl'>,
): string {
  const d = entry.decision;
  const env = entry.message.envelope;
  const lines = [
    `From: ${ascii(s.from)}`,
    `To: ${s.to.map(ascii).join(', ')}`,
    `Subject: [sandgate] quarantined ${ascii(id)} (${ascii(d.verdict)})`,
    `Date: ${new Date().toUTCString()}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    'Auto-Submitted: auto-generated',
    '',
    'A message was kept in the quarantine.',
    '',
    `Id:         ${ascii(id)}`,
    `Verdict:    ${ascii(d.verdict)} (${ascii(d.reason)}), action ${d.action}`,
    `Threats:    ${d.threats.map(ascii).join(', ') || '-'}`,
    `Sender:     <${ascii(env.sender)}>`,
    `Recipients: ${env.recipients.map(ascii).join(', ')}`,
    ...(env.clientAddress !== undefined ? [`Client:     ${ascii(env.clientAddress)}`] : []),
    `Front end:  ${ascii(env.frontEnd)}`,
    `Size:       ${entry.message.size} bytes`,
    '',
    `Review:     ${s.adminUrl !== undefined ? `${s.adminUrl.replace(/\/$/, '')}/quarantine` : `sandgate quarantine show ${ascii(id)}`}`,
    '',
  ];
  return lines.join('\r\n');
}

function ascii(s: string): string {
  return printable(s, { ascii: true, max: 300 });
}
