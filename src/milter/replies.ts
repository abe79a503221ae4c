/**
 * Decision -> milter replies: the wire mapping of the milter front end (the core never sees a
 * reply code). Pure.
 */
import type { Evaluation } from '../core/evaluation.js';
import type { MilterReply } from './codec.js';

/** What the MTA is told in the end, for logs and metrics. */
export interface FinalAnswer {
  /** The milter replies to send, edits first, the verdict last. */
  readonly replies: readonly MilterReply[];
  /** accept, discard or replycode. */
  readonly reply: 'accept' | 'discard' | 'replycode';
  /** The SMTP code the client gets: 250 for accept and discard. */
  readonly code: number;
}

export interface SmtpText {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

/**
 * A REPLYCODE reply: "550 5.7.1 text". Postfix reads `%` in it as printf-style, so a literal one
 * is written `%%`; CR, LF and NUL would split or cut the reply and become spaces. One line only.
 */
export function replyCode(r: SmtpText): MilterReply {
  const text = r.text.replace(/[\r\n\0]+/g, ' ').replaceAll('%', '%%');
  return { kind: 'replycode', text: `${r.code} ${r.enhanced} ${text}` };
}

export function refusal(r: SmtpText): FinalAnswer {
  return { replies: [replyCode(r)], reply: 'replycode', code: r.code };
}

export const MILTER_REPLIES = {
  tooBig: (limit: number): SmtpText => ({
    code: 552,
    enhanced: '5.3.4',
    text: `Message exceeds the size limit of ${limit} bytes`,
  }),
  loop: (hops: number): SmtpText => ({
    code: 554,
    enhanced: '5.4.6',
    text: `Too many hops (${hops} Received fields): mail loop?`,
  }),
  deadline: (msgId: string): SmtpText => ({
    code: 451,
    enhanced: '4.7.0',
    text: `Scanning did not finish in time, try again later (${msgId})`,
  }),
  localError: (msgId: string): SmtpText => ({
    code: 451,
    enhanced: '4.3.0',
    text: `Local error, try again later (${msgId})`,
  }),
  tempfail: (reason: string, msgId: string): SmtpText => ({
    code: 451,
    enhanced: '4.7.0',
    text: `Message could not be scanned (${reason}), try again later (${msgId})`,
  }),
  /** In-flight messages still unanswered when the shutdown timeout ends. */
  stopping: (msgId: string): SmtpText => ({
    code: 451,
    enhanced: '4.3.2',
    text: `Shutting down, try again later (${msgId})`,
  }),
  /** At MAIL while shutting down: Postfix ends the SMTP session after a 421. */
  shuttingDown: { code: 421, enhanced: '4.3.2', text: 'Shutting down, try again later' } as SmtpText,
  /** At MAIL when milter.maxConnections is reached. */
  tooMany: { code: 421, enhanced: '4.7.0', text: 'Too many connections, try again later' } as SmtpText,
} as const;

export interface DecisionOptions {
  /** milter.rejectText: {threats} and {msgId} are replaced. */
  readonly rejectText: string;
  /** How many header fields of this name (any case) the message arrived with. */
  readonly countHeader: (name: string) => number;
  /** HDR_LEADSPC was negotiated: a value we send keeps its leading space as written. */
  readonly leadingSpace: boolean;
}

/**
 * The replies for one evaluation:
 * - deliver: inbound copies of our fields deleted (CHGHEADER with an empty value, the highest
 *   index first, so no deletion moves a field still to be deleted), our fields inserted at the top
 *   in order (INSHEADER 0, 1, ...: where the relay prepends them), then ACCEPT;
 * - reject: REPLYCODE 550 5.7.1 with the configured text, a refusal inside the client's session;
 * - discard, quarantine: DISCARD (the client is told 250; the core kept the copy);
 * - tempfail: REPLYCODE 451 4.7.0.
 * A drop whose policy asked for a kept copy that does not exist is answered 451 instead: mail is
 * never lost.
 */
export function decisionAnswer(ev: Evaluation, o: DecisionOptions): FinalAnswer {
  const d = ev.decision;
  const copyMissing = d.keepCopy && ev.quarantineId === undefined;
  switch (d.action) {
    case 'deliver': {
      const edits: MilterReply[] = [];
      for (const name of ev.stripHeaders) {
        for (let i = o.countHeader(name); i >= 1; i--)
          edits.push({ kind: 'chgHeader', index: i, name, value: '' });
      }
      ev.headers.forEach((h, i) => {
        const value = h.value.replace(/[\r\n\0]+/g, ' ');
        edits.push({
          kind: 'insHeader',
          index: i,
          name: h.name,
          value: o.leadingSpace ? ` ${value}` : value,
        });
      });
      return { replies: [...edits, { kind: 'accept' }], reply: 'accept', code: 250 };
    }
    case 'reject': {
      if (copyMissing) return refusal(MILTER_REPLIES.tempfail('copy-missing', ev.msgId));
      const threats = d.threats.length > 0 ? d.threats.join(', ') : d.reason;
      return refusal({
        code: 550,
        enhanced: '5.7.1',
        text: o.rejectText.replaceAll('{threats}', threats).replaceAll('{msgId}', ev.msgId),
      });
    }
    case 'discard':
    case 'quarantine':
      if (copyMissing || (d.action === 'quarantine' && ev.quarantineId === undefined)) {
        return refusal(MILTER_REPLIES.tempfail('copy-missing', ev.msgId));
      }
      return { replies: [{ kind: 'discard' }], reply: 'discard', code: 250 };
    case 'tempfail':
      return refusal(MILTER_REPLIES.tempfail(d.reason, ev.msgId));
  }
}
