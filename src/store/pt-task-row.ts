import type { PtTask, PtTaskClaim } from '../core/state-records.js';

/** A pt_task row as both backends store it (SQLite and PostgreSQL use the same columns). */
export interface PtTaskRow {
  content_key: string;
  fingerprint: string;
  scan_id: string | null;
  mode: string;
  owner: string;
  submitted_at: number;
  last_polled_at: number | null;
  token_fp: string | null;
  lease_until: number | null;
}

export const toTask = (r: PtTaskRow): PtTask => ({
  contentKey: r.content_key,
  fingerprint: r.fingerprint,
  scanId: r.scan_id ?? undefined,
  mode: r.mode,
  owner: r.owner,
  submittedAt: r.submitted_at,
  lastPolledAt: r.last_polled_at ?? undefined,
  tokenFingerprint: r.token_fp ?? undefined,
  leaseUntil: r.lease_until ?? undefined,
});

/**
 * Whether a claim may replace the task row already there: it was made for another submission mode
 * or with another PT Sandbox token (its report cannot be read with ours), or it is too old (a
 * claim that never got its scan id within claimTimeoutMs, a task older than maxTaskAgeMs).
 */
export function claimReplaces(existing: PtTask, claim: PtTaskClaim): boolean {
  const age = claim.now - existing.submittedAt;
  return (
    existing.mode !== claim.mode ||
    (existing.tokenFingerprint !== undefined && existing.tokenFingerprint !== claim.tokenFingerprint) ||
    (existing.scanId === undefined ? age > claim.claimTimeoutMs : age > claim.maxTaskAgeMs)
  );
}
