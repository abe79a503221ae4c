import MimeNode from 'nodemailer/lib/mime-node';
import { printable } from '../../core/text.js';

/** One recipient that will not get the message, as reported in a DSN. */
export interface DsnRecipient {
  readonly address: string;
  /** ORCPT as given at RCPT (`rfc822;addr`), reported as Original-Recipient. */
  readonly orcpt?: string;
  /** RFC 3463 status, e.g. 5.1.1, or 4.4.7 when the lifetime ran out. */
  readonly status: string;
  /** The next hop's reply ("550 5.1.1 No such user"), reported as Diagnostic-Code: smtp; ... */
  readonly diagnostic?: string;
  /** The next hop, reported as Remote-MTA (dns; host). */
  readonly remoteMta?: string;
}

export interface DsnInput {
  /** Our name (Reporting-MTA, and the domain of the From address). */
  readonly reportingMta: string;
  /** Where the DSN goes: the original envelope sender (never the null sender). */
  readonly to: string;
  readonly msgId: string;
  /** ENVID from the original MAIL FROM, reported as Original-Envelope-Id. */
  readonly envelopeId?: string;
  readonly arrivalDate: number;
  readonly lastAttempt: number;
  /** The original header block (CRLF lines, without the blank line); the body is never returned. */
  readonly originalHeaders: string;
  readonly recipients: readonly DsnRecipient[];
  /** Why: 'refused' (the next hop refused permanently) or 'expired' (relay.queue.maxLifetime passed). */
  readonly why: 'refused' | 'expired';
}

/** Field values in a delivery-status part: one line, printable US-ASCII. */
function field(value: string): string {
  return printable(value, { ascii: true });
}

/**
 * A delivery status notification (RFC 3464): multipart/report; report-type=delivery-status with a
 * human-readable part, the machine-readable message/delivery-status part, and the original header
 * block as text/rfc822-headers (the content itself is never sent back). Built with nodemailer's
 * MIME tree builder, the one its MailComposer uses.
 */
export async function buildDsn(input: DsnInput): Promise<Buffer> {
  const root = new MimeNode('multipart/report', { newline: '\r\n', hostname: input.reportingMta });
  root.setHeader('Content-Type', 'multipart/report; report-type=delivery-status');
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    To: `<${input.to}>`,
    Subject: 'Undelivered Mail Returned to Sender',
    Date: new Date(input.lastAttempt).toUTCString().replace('GMT', '+0000'),
    'Auto-Submitted': 'auto-replied',
  });

  const lines = [
    `This is the mail system at ${input.reportingMta}.`,
    '',
    input.why === 'expired'
      ? 'Your message could not be delivered to the recipients below within the time allowed.'
      : 'Your message could not be delivered to the recipients below: the next mail server refused it.',
    '',
    ...input.recipients.map((r) => `<${r.address}>: ${r.diagnostic ?? `status ${r.status}`}`),
    '',
    `Our reference: ${input.msgId}`,
  ];
  root.createChild('text/plain; charset=utf-8').setContent(`${lines.join('\r\n')}\r\n`);

  const perMessage = [
    `Reporting-MTA: dns; ${field(input.reportingMta)}`,
    `X-Sandgate-Queue-ID: ${field(input.msgId)}`,
    ...(input.envelopeId !== undefined ? [`Original-Envelope-Id: ${field(input.envelopeId)}`] : []),
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
  ];
  const perRecipient = input.recipients.map((r) =>
    [
      ...(r.orcpt !== undefined ? [`Original-Recipient: ${field(r.orcpt)}`] : []),
      `Final-Recipient: rfc822; ${field(r.address)}`,
      'Action: failed',
      `Status: ${field(r.status)}`,
      ...(r.remoteMta !== undefined ? [`Remote-MTA: dns; ${field(r.remoteMta)}`] : []),
      ...(r.diagnostic !== undefined ? [`Diagnostic-Code: smtp; ${field(r.diagnostic)}`] : []),
      `Last-Attempt-Date: ${rfc5322Date(input.lastAttempt)}`,
    ].join('\r\n'),
  );
  root
    .createChild('message/delivery-status')
    .setContent(`${[perMessage.join('\r\n'), ...perRecipient].join('\r\n\r\n')}\r\n`);

  const headers = input.originalHeaders.endsWith('\r\n')
    ? input.originalHeaders
    : `${input.originalHeaders}\r\n`;
  root.createChild('text/rfc822-headers').setContent(headers);
  return root.build();
}

function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace('GMT', '+0000');
}
