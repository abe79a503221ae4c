import type { Evaluation } from '../core/evaluation.js';
import { replyText, type Reply } from './smtp-client.js';

/** What the relay answers its client; the front end owns the wire mapping, the core never sees a code. */
export interface SmtpReply {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

export interface ReplyTexts {
  /** Text of the 550 5.7.1 reply; {threats} and {msgId} are replaced. */
  readonly rejectText: string;
}

/** The reply for a decision that does not hand the message on; undefined for 'deliver'. */
export function decisionReply(ev: Evaluation, texts: ReplyTexts): SmtpReply | undefined {
  const d = ev.decision;
  switch (d.action) {
    case 'deliver':
      return undefined;
    case 'reject': {
      const threats = d.threats.length > 0 ? d.threats.join(', ') : d.reason;
      return {
        code: 550,
        enhanced: '5.7.1',
        text: texts.rejectText.replaceAll('{threats}', threats).replaceAll('{msgId}', ev.msgId),
      };
    }
    case 'discard':
      // The sender is told the message was taken; the operator chose discard (the core kept a copy if configured).
      return { code: 250, enhanced: '2.0.0', text: `Ok: ${ev.msgId}` };
    case 'quarantine':
      return {
        code: 250,
        enhanced: '2.0.0',
        text: `Ok: quarantined as ${ev.quarantineId ?? ev.msgId} (${ev.msgId})`,
      };
    case 'tempfail':
      return {
        code: 451,
        enhanced: '4.7.0',
        text: `Message could not be scanned (${d.reason}), try again later (${ev.msgId})`,
      };
  }
}

/** Our reply after the next hop answered the final dot: its code and status, with our msgId. */
export function nextHopReply(r: Reply, msgId: string): SmtpReply {
  const code = r.code >= 200 && r.code < 600 ? r.code : 451;
  const enhanced = enhancedFor(code, r.enhanced);
  const text = replyText(r).slice(0, 400);
  return code < 300
    ? { code, enhanced, text: `Ok: ${msgId} (next hop: ${text})` }
    : { code, enhanced, text: `${text} (${msgId})` };
}

/**
 * One reply for an SMTP client from several LMTP replies (one per recipient). All accepted: the
 * first 2xx. Otherwise a refusal, 4xx if any recipient got 4xx: recipients that were accepted may
 * then get the message twice on retry, but no recipient is lost silently.
 */
export function combineReplies(replies: readonly Reply[]): Reply {
  const failed = replies.filter((r) => r.code >= 300);
  if (failed.length === 0)
    return replies[0] ?? { code: 451, enhanced: '4.4.2', lines: ['no reply from the next hop'] };
  return failed.find((r) => r.code < 500) ?? (failed[0] as Reply);
}

export const REPLIES = {
  tooBig: (limit: number): SmtpReply => ({
    code: 552,
    enhanced: '5.3.4',
    text: `Message exceeds the size limit of ${limit} bytes`,
  }),
  loop: (hops: number): SmtpReply => ({
    code: 554,
    enhanced: '5.4.6',
    text: `Too many hops (${hops} Received fields): mail loop?`,
  }),
  deadline: (msgId: string): SmtpReply => ({
    code: 451,
    enhanced: '4.7.0',
    text: `Scanning did not finish in time, try again later (${msgId})`,
  }),
  localError: (msgId: string): SmtpReply => ({
    code: 451,
    enhanced: '4.3.0',
    text: `Local error, try again later (${msgId})`,
  }),
  notAllowed: {
    code: 554,
    enhanced: '5.7.1',
    text: 'Access denied: this client may not use this relay',
  } as SmtpReply,
  tooMany: { code: 421, enhanced: '4.7.0', text: 'Too many connections, try again later' } as SmtpReply,
  shuttingDown: { code: 421, enhanced: '4.3.2', text: 'Shutting down, try again later' } as SmtpReply,
  smtpUtf8: { code: 553, enhanced: '5.6.7', text: 'The next hop does not support SMTPUTF8' } as SmtpReply,
} as const;

export interface ResponseError extends Error {
  responseCode: number;
}

/** smtp-server takes refusals as errors carrying `responseCode`; the enhanced code goes in the text. */
export function toError(r: SmtpReply): ResponseError {
  const err = new Error(`${r.enhanced} ${r.text}`) as ResponseError;
  err.responseCode = r.code;
  return err;
}

/** smtp-server takes acceptances as the text after the code. */
export function toText(r: SmtpReply): string {
  return `${r.enhanced} ${r.text}`;
}

/** A next hop's refusal of MAIL or RCPT, passed back with its own code. */
export function passBack(r: Reply): SmtpReply {
  const code = r.code >= 400 && r.code < 600 ? r.code : 451;
  return {
    code,
    enhanced: enhancedFor(code, r.enhanced),
    text: r.lines.join(' ').slice(0, 400),
  };
}

/** The peer's enhanced status code when it is of the reply's class, else the class's generic one (RFC 3463). */
export function enhancedFor(code: number, enhanced: string | undefined): string {
  const cls = Math.floor(code / 100);
  return enhanced !== undefined && enhanced.startsWith(`${cls}.`) ? enhanced : `${cls}.0.0`;
}
