import type { ClusterStore } from '../core/ports.js';
import type { StateDb } from './db.js';

/**
 * The cluster_fingerprint and cluster_job tables (migration 8): fingerprints of the secrets every
 * process on the state must share, and job leases (one retention pass at a time). Each method is
 * one statement, so it is atomic across the processes sharing the SQLite file.
 */
export class SqliteClusterStore implements ClusterStore {
  private readonly stmt;

  constructor(db: StateDb) {
    this.stmt = {
      get: db.prepare<[string], { value: string }>('SELECT value FROM cluster_fingerprint WHERE name = ?'),
      claim: db.prepare<[string, string, number], { value: string }>(
        // The no-op update makes RETURNING give the stored row when it exists.
        `INSERT INTO cluster_fingerprint (name, value, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET name = name RETURNING value`,
      ),
      set: db.prepare(
        `INSERT INTO cluster_fingerprint (name, value, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
      ),
      tryJob: db.prepare(
        `INSERT INTO cluster_job (job, owner, lease_until) VALUES (@job, @owner, @until)
         ON CONFLICT (job) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
           WHERE cluster_job.lease_until <= @now OR cluster_job.owner = excluded.owner`,
      ),
      releaseJob: db.prepare('DELETE FROM cluster_job WHERE job = ? AND owner = ?'),
    };
  }

  async getFingerprint(name: string): Promise<string | undefined> {
    return this.stmt.get.get(name)?.value;
  }

  async claimFingerprint(name: string, value: string, now: number): Promise<string> {
    const row = this.stmt.claim.get(name, value, now);
    if (row === undefined) throw new Error(`cluster_fingerprint: no row for ${name}`);
    return row.value;
  }

  async setFingerprint(name: string, value: string, now: number): Promise<void> {
    this.stmt.set.run(name, value, now);
  }

  async tryJobLease(job: string, owner: string, now: number, until: number): Promise<boolean> {
    return this.stmt.tryJob.run({ job, owner, now, until }).changes === 1;
  }

  async releaseJobLease(job: string, owner: string): Promise<void> {
    this.stmt.releaseJob.run(job, owner);
  }
}
