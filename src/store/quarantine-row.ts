import type { QuarantineEntry } from '../core/ports.js';
import type { QuarantineItem, QuarantineRecord } from '../core/state-records.js';

/** A quarantine index row as both backends store it (SQLite and PostgreSQL use the same columns). */
export interface QuarantineRow {
  id: string;
  msg_id: string;
  created_at: number;
  front_end: string;
  sender: string;
  recipients: string;
  client: string | null;
  helo: string | null;
  subject: string | null;
  subject_text: string | null;
  verdict: string;
  action: string;
  reason: string;
  threats: string;
  outcomes: string;
  content_key: string;
  size: number;
  stored_size: number;
  file: string;
  released_at: number | null;
  released_by: string | null;
  released_to: string | null;
}

export function fromRow(r: QuarantineRow): QuarantineItem {
  return {
    id: r.id,
    msgId: r.msg_id,
    createdAt: r.created_at,
    envelope: {
      sender: r.sender,
      recipients: JSON.parse(r.recipients) as string[],
      frontEnd: r.front_end,
      ...(r.client !== null ? { clientAddress: r.client } : {}),
      ...(r.helo !== null ? { heloName: r.helo } : {}),
    },
    ...(r.subject !== null ? { subject: r.subject } : {}),
    ...(r.subject_text !== null ? { subjectText: r.subject_text } : {}),
    verdict: r.verdict,
    action: r.action,
    reason: r.reason,
    threats: JSON.parse(r.threats) as string[],
    outcomes: JSON.parse(r.outcomes) as unknown[],
    contentKey: r.content_key,
    size: r.size,
    storedSize: r.stored_size,
    file: r.file,
    ...(r.released_at !== null ? { releasedAt: r.released_at } : {}),
    ...(r.released_by !== null ? { releasedBy: r.released_by } : {}),
    ...(r.released_to !== null ? { releasedTo: r.released_to } : {}),
  };
}

/** Escapes LIKE's wildcards (the pattern is used with ESCAPE '\\'). */
export function likeEscape(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** The index record of a message put in quarantine (its stored size and where its bytes are). */
export function quarantineRecord(
  entry: QuarantineEntry,
  at: { readonly id: string; readonly createdAt: number; readonly storedSize: number; readonly file: string },
): QuarantineRecord {
  return {
    id: at.id,
    msgId: entry.message.msgId,
    createdAt: at.createdAt,
    envelope: entry.message.envelope,
    ...(entry.subject !== undefined ? { subject: entry.subject } : {}),
    verdict: entry.decision.verdict,
    action: entry.decision.action,
    reason: entry.decision.reason,
    threats: entry.decision.threats,
    outcomes: entry.outcomes,
    contentKey: entry.contentKey,
    size: entry.message.size,
    storedSize: at.storedSize,
    file: at.file,
  };
}
