import { MARK_KEY_FINGERPRINT } from '../core/cluster.js';
import type { StateDb } from './db.js';

/**
 * The fingerprints of the shared secrets a state holds (`sandgate state status`): the
 * X-Sandgate-Mark key's (recorded by the first process that started) and the PT Sandbox tokens'
 * that created the tasks in flight. Never the secrets themselves.
 */
export interface StoredFingerprints {
  readonly markKey: string | undefined;
  /** Per token fingerprint: tasks with a scan id, and how many of them a running owner still leases. */
  readonly ptTokens: ReadonlyArray<{ fingerprint: string; tasks: number; leased: number }>;
}

/** The stored fingerprints of a SQLite state. */
export function sqliteFingerprints(db: StateDb, now: number): StoredFingerprints {
  const mark = db
    .prepare<[string], { value: string }>('SELECT value FROM cluster_fingerprint WHERE name = ?')
    .get(MARK_KEY_FINGERPRINT);
  const tokens = db
    .prepare<[number], { token_fp: string; n: number; leased: number }>(
      `SELECT token_fp, count(*) AS n, sum(CASE WHEN lease_until > ? THEN 1 ELSE 0 END) AS leased FROM pt_task
       WHERE scan_id IS NOT NULL AND token_fp IS NOT NULL GROUP BY token_fp ORDER BY token_fp`,
    )
    .all(now);
  return {
    markKey: mark?.value,
    ptTokens: tokens.map((r) => ({ fingerprint: r.token_fp, tasks: r.n, leased: r.leased })),
  };
}
