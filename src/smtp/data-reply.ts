import { toError, toText, type SmtpReply } from './replies.js';

/** smtp-server's DATA callback: an error refuses, a text (or one per LMTP recipient) accepts. */
export type DataCallback = (err?: Error | null, message?: string | Array<string | Error>) => void;

/** Answers DATA through smtp-server: one reply, or (LMTP) one reply per recipient. */
export function replyToData(cb: DataCallback, reply: SmtpReply | readonly SmtpReply[]): void {
  if (isList(reply)) {
    cb(
      null,
      reply.map((r) => (r.code < 400 ? toText(r) : toError(r))),
    );
  } else if (reply.code < 400) {
    cb(null, toText(reply));
  } else {
    cb(toError(reply));
  }
}

function isList(reply: SmtpReply | readonly SmtpReply[]): reply is readonly SmtpReply[] {
  return Array.isArray(reply);
}
