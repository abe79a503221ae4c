import type { PtTaskStore } from '../core/ports.js';
import type { PtClaimResult, PtTask, PtTaskClaim } from '../core/state-records.js';
import type { StateDb } from './db.js';
import { claimReplaces, toTask, type PtTaskRow as Row } from './pt-task-row.js';

/** How long pt_task_history keeps finished tasks (ms), and how often a finish prunes it. */
export const HISTORY_KEEP_MS = 15 * 60_000;
const HISTORY_PRUNE_EVERY = 200;

/**
 * The pt_task table (migration 3): content key + scanner fingerprint -> scan_id. A row without a
 * scan_id is a claim: its owner is submitting, others wait for the scan_id instead of submitting
 * the same content again. A restarted process finds the row and resumes polling. Migration 8 adds
 * the owner's lease (lease_until: renew() extends it, adopt() takes a task over once it ran out)
 * and the fingerprint of the token that created the task (token_fp).
 */
export class SqlitePtTaskStore implements PtTaskStore {
  private readonly stmt;

  constructor(private readonly db: StateDb) {
    this.stmt = {
      get: db.prepare<[string, string], Row>(
        'SELECT * FROM pt_task WHERE content_key = ? AND fingerprint = ?',
      ),
      insert: db.prepare(
        'INSERT OR IGNORE INTO pt_task (content_key, fingerprint, scan_id, mode, owner, submitted_at, token_fp, lease_until) VALUES (?, ?, NULL, ?, ?, ?, ?, ?)',
      ),
      replace: db.prepare(
        'UPDATE pt_task SET scan_id = NULL, mode = ?, owner = ?, submitted_at = ?, last_polled_at = NULL, token_fp = ?, lease_until = ? WHERE content_key = ? AND fingerprint = ?',
      ),
      adopt: db.prepare(
        `UPDATE pt_task SET owner = @owner, lease_until = @leaseUntil
         WHERE content_key = @contentKey AND fingerprint = @fingerprint AND scan_id = @scanId
           AND (owner = @owner OR lease_until IS NULL OR lease_until <= @now)`,
      ),
      renew: db.prepare('UPDATE pt_task SET lease_until = ? WHERE owner = ?'),
      tokens: db.prepare<[number, number | null, number | null], { token_fp: string; n: number }>(
        `SELECT token_fp, count(*) AS n FROM pt_task
         WHERE scan_id IS NOT NULL AND token_fp IS NOT NULL AND submitted_at >= ?
           AND (? IS NULL OR lease_until > ?)
         GROUP BY token_fp ORDER BY token_fp`,
      ),
      setScanId: db.prepare(
        'UPDATE pt_task SET scan_id = ?, submitted_at = ? WHERE content_key = ? AND fingerprint = ? AND owner = ?',
      ),
      touch: db.prepare('UPDATE pt_task SET last_polled_at = ? WHERE content_key = ? AND fingerprint = ?'),
      removeScan: db.prepare('DELETE FROM pt_task WHERE content_key = ? AND fingerprint = ? AND scan_id = ?'),
      removeClaim: db.prepare(
        'DELETE FROM pt_task WHERE content_key = ? AND fingerprint = ? AND owner = ? AND scan_id IS NULL',
      ),
      purge: db.prepare('DELETE FROM pt_task WHERE submitted_at < ?'),
      count: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM pt_task'),
      finished: db.prepare<[string, string, string], { owner: string; submitted_at: number }>(
        'DELETE FROM pt_task WHERE content_key = ? AND fingerprint = ? AND scan_id = ? RETURNING owner, submitted_at',
      ),
      history: db.prepare(
        'INSERT INTO pt_task_history (scan_id, owner, submitted_at, finished_at, outcome) VALUES (?, ?, ?, ?, ?)',
      ),
      pruneHistory: db.prepare('DELETE FROM pt_task_history WHERE finished_at < ?'),
    };
    this.finishTx = db.transaction(
      (contentKey: string, fingerprint: string, scanId: string, finishedAt: number, outcome: string) => {
        const row = this.stmt.finished.get(contentKey, fingerprint, scanId);
        if (row === undefined) return;
        this.stmt.history.run(scanId, row.owner, row.submitted_at, finishedAt, outcome);
        if (++this.sincePrune >= HISTORY_PRUNE_EVERY) {
          this.sincePrune = 0;
          this.stmt.pruneHistory.run(finishedAt - HISTORY_KEEP_MS);
        }
      },
    );
  }

  private readonly finishTx;
  private sincePrune = 0;

  async get(contentKey: string, fingerprint: string): Promise<PtTask | undefined> {
    return this.getNow(contentKey, fingerprint);
  }

  private getNow(contentKey: string, fingerprint: string): PtTask | undefined {
    const row = this.stmt.get.get(contentKey, fingerprint);
    return row === undefined ? undefined : toTask(row);
  }

  /**
   * Claims the right to submit this content. Returns the existing task instead when one is in
   * flight (or being submitted) and younger than the limits; a stale row is taken over.
   */
  async claim(contentKey: string, fingerprint: string, claim: PtTaskClaim): Promise<PtClaimResult> {
    const run = this.db.transaction(() => {
      const inserted = this.stmt.insert.run(
        contentKey,
        fingerprint,
        claim.mode,
        claim.owner,
        claim.now,
        claim.tokenFingerprint,
        claim.leaseUntil,
      );
      if (inserted.changes === 1) return { claimed: true as const };
      const existing = this.getNow(contentKey, fingerprint);
      if (existing === undefined) return { claimed: true as const };
      if (!claimReplaces(existing, claim)) return { claimed: false as const, task: existing };
      this.stmt.replace.run(
        claim.mode,
        claim.owner,
        claim.now,
        claim.tokenFingerprint,
        claim.leaseUntil,
        contentKey,
        fingerprint,
      );
      return { claimed: true as const };
    });
    return run.immediate();
  }

  /** Takes over a task whose owner's lease ran out; one UPDATE, so exactly one adopter wins. */
  async adopt(
    contentKey: string,
    fingerprint: string,
    scanId: string,
    owner: string,
    now: number,
    leaseUntil: number,
  ): Promise<boolean> {
    return this.stmt.adopt.run({ contentKey, fingerprint, scanId, owner, now, leaseUntil }).changes === 1;
  }

  async renew(owner: string, leaseUntil: number): Promise<number> {
    return this.stmt.renew.run(leaseUntil, owner).changes;
  }

  async tokenFingerprints(
    submittedSince: number,
    leasedAt?: number,
  ): Promise<Array<{ tokenFingerprint: string; tasks: number }>> {
    const at = leasedAt ?? null;
    return this.stmt.tokens
      .all(submittedSince, at, at)
      .map((r) => ({ tokenFingerprint: r.token_fp, tasks: r.n }));
  }

  /** Records the scan_id of a task we claimed. */
  async setScanId(
    contentKey: string,
    fingerprint: string,
    owner: string,
    scanId: string,
    now: number,
  ): Promise<void> {
    this.stmt.setScanId.run(scanId, now, contentKey, fingerprint, owner);
  }

  async touch(contentKey: string, fingerprint: string, now: number): Promise<void> {
    this.stmt.touch.run(now, contentKey, fingerprint);
  }

  /** Forgets a finished (or lost) task; another scan_id under the same key is left alone. */
  async remove(contentKey: string, fingerprint: string, scanId: string): Promise<void> {
    this.stmt.removeScan.run(contentKey, fingerprint, scanId);
  }

  /**
   * Forgets a task that ended (`outcome`: verdict, timeout, lost, failed) and, when this call is the
   * one that removed its row (several processes may poll one task), records its submission and end
   * times in pt_task_history, which keeps the last HISTORY_KEEP_MS for `sandgate sandbox health --watch`.
   */
  async finish(
    contentKey: string,
    fingerprint: string,
    scanId: string,
    finishedAt: number,
    outcome: string,
  ): Promise<void> {
    this.finishTx.immediate(contentKey, fingerprint, scanId, finishedAt, outcome);
  }

  /** Gives up a claim that never got a scan_id (the upload failed). */
  async release(contentKey: string, fingerprint: string, owner: string): Promise<void> {
    this.stmt.removeClaim.run(contentKey, fingerprint, owner);
  }

  /** Deletes rows submitted before `before` (epoch ms). Returns how many. */
  async purge(before: number): Promise<number> {
    return this.stmt.purge.run(before).changes;
  }

  async count(): Promise<number> {
    return this.stmt.count.get()?.n ?? 0;
  }
}
