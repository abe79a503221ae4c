import type { Evaluation } from '../core/evaluation.js';
import { VERDICT_HEADER } from '../core/mark.js';
import type { Reply } from './protocol.js';

/** How the helper words its answers (config `helper.*`). */
export interface ReplySettings {
  /** The answer for reject: DISCARD (silent) or ERROR (CommuniGate bounces with texts.reject). */
  readonly rejectWord: 'DISCARD' | 'ERROR';
  /** Send ADDHEADER ... OK for delivered mail; off: a bare OK for clean mail. */
  readonly addHeaders: boolean;
  readonly texts: { readonly reject: string; readonly tempfail: string };
}

export const DEFAULT_REPLY_SETTINGS: ReplySettings = {
  rejectWord: 'DISCARD',
  addHeaders: true,
  texts: {
    reject: 'Message refused by sandgate: {verdict} ({threats}), id {msgId}',
    tempfail: 'sandgate: not scanned yet ({reason}), will retry',
  },
};

/** Why the helper itself answered with the tempfail reply (logged and put into the text as {reason}). */
export type HelperTempfailReason =
  | 'deadline'
  | 'config'
  | 'bad-path'
  | 'outside-base'
  | 'queue-file-missing'
  | 'queue-file-unreadable'
  | 'queue-file-malformed'
  /** A FIFO, directory, device or socket where a queue file should be: answered at once, never read. */
  | 'queue-file-not-regular'
  /** The queue file itself is a symbolic link (CommuniGate never writes one). */
  | 'queue-file-symlink'
  | 'copy-missing'
  /** A numbered command line longer than helper.maxLineLength (answered by its number). */
  | 'line-too-long'
  | 'internal';

export function fillText(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/\{(msgId|verdict|threats|reason)\}/g, (m, key: string) => values[key] ?? m);
}

/** The tempfail reply: the message stays in CommuniGate's queue and is tried again. */
export function tempfailReply(settings: ReplySettings, reason: string, msgId = ''): Reply {
  return {
    kind: 'REJECTED',
    text: fillText(settings.texts.tempfail, { reason, msgId, verdict: 'unscanned', threats: '' }),
  };
}

/**
 * The answer for one evaluation:
 * deliver -> ADDHEADER "X-Sandgate-Verdict: ..." OK (OK when headers are off; never a bare OK for
 * mail that was not fully scanned); reject -> DISCARD or ERROR "text"; discard and quarantine ->
 * DISCARD; tempfail -> REJECTED "text". A drop whose policy asked for a kept copy that does not
 * exist is answered with the tempfail reply instead: mail is never lost.
 */
export function replyForEvaluation(ev: Evaluation, settings: ReplySettings): Reply {
  const d = ev.decision;
  const values = {
    msgId: ev.msgId,
    verdict: d.verdict,
    threats: d.threats.length > 0 ? d.threats.join(', ') : d.reason,
    reason: d.reason,
  };
  const copyMissing = d.keepCopy && ev.quarantineId === undefined;
  switch (d.action) {
    case 'deliver':
      return deliverReply(ev, settings);
    case 'reject':
      if (copyMissing) return tempfailReply(settings, 'copy-missing', ev.msgId);
      return settings.rejectWord === 'ERROR'
        ? { kind: 'ERROR', text: fillText(settings.texts.reject, values) }
        : { kind: 'DISCARD' };
    case 'discard':
    case 'quarantine':
      if (copyMissing || (d.action === 'quarantine' && ev.quarantineId === undefined)) {
        return tempfailReply(settings, 'copy-missing', ev.msgId);
      }
      return { kind: 'DISCARD' };
    case 'tempfail':
      return tempfailReply(settings, d.reason, ev.msgId);
  }
}

function deliverReply(ev: Evaluation, settings: ReplySettings): Reply {
  const d = ev.decision;
  const unscanned = d.failOpen || d.bypass !== undefined || d.verdict !== 'clean';
  let fields = ev.headers.map((h) => `${h.name}: ${h.value}`);
  if (!settings.addHeaders && !unscanned) return { kind: 'OK' };
  // Judged before and already carrying our verdict header: CommuniGate cannot strip the old one,
  // so adding another would leave two.
  if (ev.alreadyJudged && ev.stripHeaders.some((n) => n.toLowerCase() === VERDICT_HEADER.toLowerCase())) {
    return { kind: 'OK' };
  }
  if (unscanned && !ev.headers.some((h) => h.name.toLowerCase() === VERDICT_HEADER.toLowerCase())) {
    // The core adds this header for unscanned mail; should it ever be missing, say so anyway.
    const state = d.failOpen ? 'unscanned' : d.verdict;
    fields = [`${VERDICT_HEADER}: ${state}; reason=${d.reason}; id=${ev.msgId}`, ...fields];
  }
  if (fields.length === 0) return { kind: 'OK' };
  return { kind: 'ADDHEADER', fields };
}
