import { createHash } from 'node:crypto';
import type pg from 'pg';
import { INFLIGHT_CHANNEL, type PgListener } from './listener.js';
import type { Finding } from '../../core/outcome.js';
import type {
  AllowList,
  CachedVerdict,
  ClusterStore,
  FirstFailureStore,
  InflightStore,
  PtLoadStore,
  PtTaskStore,
  ScannerVersionRecord,
  ScannerVersionStore,
  VerdictKey,
  VerdictStore,
} from '../../core/ports.js';
import type {
  AllowedHash,
  PtClaimResult,
  PtLoadSnapshot,
  PtLoadWindows,
  PtProcessLoad,
  PtTask,
  PtTaskClaim,
} from '../../core/state-records.js';
import { HISTORY_KEEP_MS } from '../pt-tasks.js';
import { claimReplaces, toTask, type PtTaskRow as TaskRow } from '../pt-task-row.js';
import { loadWindows, ptLoadSnapshot, type PtProcessRow } from '../pt-load-row.js';

/**
 * Runs `fn` in one transaction on one pool connection (released, or destroyed after an error).
 * While we hold the connection the pool does not listen for its 'error' event, and node-postgres
 * emits one when the server goes away (a restart, pg_terminate_backend), even between queries:
 * unhandled, it would end the process (and write to stderr, fatal for the helper). So we listen
 * while we hold it; the queries of the transaction fail on their own, and the connection is
 * destroyed on release.
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const lost = (err: Error): void => {
    broken ??= err;
  };
  client.on('error', lost);
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch((e: unknown) => {
      broken = e instanceof Error ? e : new Error(String(e));
    });
    throw err;
  } finally {
    client.off('error', lost);
    client.release(broken);
  }
}

export class PgVerdictStore implements VerdictStore {
  constructor(private readonly pool: pg.Pool) {}

  async get(key: VerdictKey, now: number): Promise<CachedVerdict | undefined> {
    const r = await this.pool.query<{ finding: string; scanner_version: string | null }>({
      name: 'verdict_get',
      text: 'SELECT finding, scanner_version FROM verdict_cache WHERE scanner = $1 AND fingerprint = $2 AND content_key = $3 AND expires_at > $4',
      values: [key.scanner, key.fingerprint, key.contentKey, now],
    });
    const row = r.rows[0];
    if (row === undefined) return undefined;
    const finding = JSON.parse(row.finding) as Finding;
    return row.scanner_version !== null ? { finding, version: row.scanner_version } : { finding };
  }

  async put(key: VerdictKey, verdict: CachedVerdict, now: number, expiresAt: number): Promise<void> {
    const { finding } = verdict;
    if (finding.kind === 'failed' || finding.kind === 'skipped') return;
    await this.pool.query({
      name: 'verdict_put',
      text: `INSERT INTO verdict_cache (scanner, fingerprint, content_key, finding, created_at, expires_at, scanner_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (scanner, fingerprint, content_key)
             DO UPDATE SET finding = excluded.finding, created_at = excluded.created_at,
               expires_at = excluded.expires_at, scanner_version = excluded.scanner_version`,
      values: [
        key.scanner,
        key.fingerprint,
        key.contentKey,
        JSON.stringify(finding),
        now,
        expiresAt,
        verdict.version ?? null,
      ],
    });
  }

  async prune(now: number): Promise<number> {
    return (await this.pool.query('DELETE FROM verdict_cache WHERE expires_at <= $1', [now])).rowCount ?? 0;
  }
}

/** The NOTIFY payload of a key (short, whatever the key's length). */
export function inflightPayload(key: VerdictKey): string {
  return createHash('sha256')
    .update(`${key.scanner}\0${key.fingerprint}\0${key.contentKey}`)
    .digest('hex')
    .slice(0, 32);
}

/**
 * Single-flight rows with a lease, shared by every node on the database. release() notifies
 * (NOTIFY sandgate_inflight, delivered at commit) and waitForRelease() listens (./listener.ts).
 */
export class PgInflightStore implements InflightStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly listener: PgListener,
  ) {}

  async waitForRelease(
    key: VerdictKey,
    options: { readonly maxWaitMs: number; readonly signal?: AbortSignal },
  ): Promise<void> {
    const until = Date.now() + Math.max(0, options.maxWaitMs);
    for (;;) {
      if (options.signal?.aborted === true) return;
      const r = await this.pool.query<{ expires_at: number }>(
        'SELECT expires_at FROM inflight_scan WHERE scanner = $1 AND fingerprint = $2 AND content_key = $3',
        [key.scanner, key.fingerprint, key.contentKey],
      );
      const now = Date.now();
      const expiresAt = r.rows[0]?.expires_at;
      if (expiresAt === undefined || expiresAt <= now || now >= until) return;
      // Woken by a NOTIFY, a reconnect of the listener, the lease's end or maxWaitMs: re-check.
      await this.listener.wait(inflightPayload(key), Math.min(until, expiresAt) - now, options.signal);
    }
  }

  async tryAcquire(key: VerdictKey, owner: string, now: number, leaseUntil: number): Promise<boolean> {
    const r = await this.pool.query({
      name: 'inflight_acquire',
      text: `INSERT INTO inflight_scan (scanner, fingerprint, content_key, owner, started_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (scanner, fingerprint, content_key) DO UPDATE
               SET owner = excluded.owner, started_at = excluded.started_at, expires_at = excluded.expires_at
               WHERE inflight_scan.expires_at <= $5`,
      values: [key.scanner, key.fingerprint, key.contentKey, owner, now, leaseUntil],
    });
    return r.rowCount === 1;
  }

  async refresh(key: VerdictKey, owner: string, leaseUntil: number): Promise<void> {
    await this.pool.query(
      'UPDATE inflight_scan SET expires_at = $1 WHERE scanner = $2 AND fingerprint = $3 AND content_key = $4 AND owner = $5',
      [leaseUntil, key.scanner, key.fingerprint, key.contentKey, owner],
    );
  }

  async release(key: VerdictKey, owner: string): Promise<void> {
    await this.pool.query(
      `WITH gone AS (
         DELETE FROM inflight_scan WHERE scanner = $1 AND fingerprint = $2 AND content_key = $3 AND owner = $4
         RETURNING 1)
       SELECT pg_notify('${INFLIGHT_CHANNEL}', $5) FROM gone`,
      [key.scanner, key.fingerprint, key.contentKey, owner, inflightPayload(key)],
    );
  }

  async isHeld(key: VerdictKey, now: number): Promise<boolean> {
    const r = await this.pool.query(
      'SELECT 1 FROM inflight_scan WHERE scanner = $1 AND fingerprint = $2 AND content_key = $3 AND expires_at > $4',
      [key.scanner, key.fingerprint, key.contentKey, now],
    );
    return (r.rowCount ?? 0) > 0;
  }
}

const MAX_PENDING_CLEARS = 10_000;

/**
 * First failures per content key. touch() writes at once (after the clears waiting in this
 * process); clear() is batched and written every `flushMs` in one statement, never on a message's
 * path. A failed flush keeps the keys for the next one.
 */
export class PgFirstFailureStore implements FirstFailureStore {
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly flushMs = 1000,
  ) {}

  async touch(contentKey: string, now: number): Promise<number> {
    await this.flush();
    const r = await this.pool.query<{ first_at: number }>(
      `INSERT INTO first_failure (content_key, first_at, last_at) VALUES ($1, $2, $2)
       ON CONFLICT (content_key) DO UPDATE SET last_at = excluded.last_at
       RETURNING first_at`,
      [contentKey, now],
    );
    return r.rows[0]?.first_at ?? now;
  }

  clear(contentKey: string): void {
    if (this.closed) return;
    this.pending.add(contentKey);
    if (this.pending.size >= MAX_PENDING_CLEARS) {
      this.flush().catch(() => this.schedule());
      return;
    }
    this.schedule();
  }

  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size === 0) return;
    const keys = [...this.pending];
    this.pending.clear();
    try {
      await this.pool.query('DELETE FROM first_failure WHERE content_key = ANY($1::text[])', [keys]);
    } catch (err) {
      for (const k of keys) this.pending.add(k);
      throw err;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush().catch(() => this.schedule());
    }, this.flushMs).unref();
  }
}

export class PgScannerVersionStore implements ScannerVersionStore {
  constructor(private readonly pool: pg.Pool) {}

  async get(scanner: string): Promise<ScannerVersionRecord | undefined> {
    const r = await this.pool.query<{ version: string; checked_at: number }>(
      'SELECT version, checked_at FROM scanner_version WHERE scanner = $1',
      [scanner],
    );
    const row = r.rows[0];
    return row === undefined ? undefined : { version: row.version, checkedAt: row.checked_at };
  }

  async put(scanner: string, version: string, checkedAt: number): Promise<string | undefined> {
    return inTransaction(this.pool, async (c) => {
      // Serialises writers of one scanner, also when no row exists yet.
      await c.query("SELECT pg_advisory_xact_lock(hashtext('sandgate.scanner_version'), hashtext($1))", [
        scanner,
      ]);
      const before = await c.query<{ version: string }>(
        'SELECT version FROM scanner_version WHERE scanner = $1',
        [scanner],
      );
      await c.query(
        `INSERT INTO scanner_version (scanner, version, checked_at) VALUES ($1, $2, $3)
         ON CONFLICT (scanner) DO UPDATE SET version = excluded.version, checked_at = excluded.checked_at
         WHERE excluded.checked_at >= scanner_version.checked_at`,
        [scanner, version, checkedAt],
      );
      return before.rows[0]?.version;
    });
  }
}

const HISTORY_PRUNE_EVERY = 200;

/** PT Sandbox tasks in flight, shared by every node (see SqlitePtTaskStore for the rules). */
export class PgPtTaskStore implements PtTaskStore {
  private sincePrune = 0;

  constructor(private readonly pool: pg.Pool) {}

  async get(contentKey: string, fingerprint: string): Promise<PtTask | undefined> {
    const r = await this.pool.query<TaskRow>(
      'SELECT * FROM pt_task WHERE content_key = $1 AND fingerprint = $2',
      [contentKey, fingerprint],
    );
    return r.rows[0] === undefined ? undefined : toTask(r.rows[0]);
  }

  async claim(contentKey: string, fingerprint: string, claim: PtTaskClaim): Promise<PtClaimResult> {
    return inTransaction(this.pool, async (c) => {
      for (;;) {
        const inserted = await c.query(
          `INSERT INTO pt_task (content_key, fingerprint, scan_id, mode, owner, submitted_at, token_fp, lease_until)
           VALUES ($1, $2, NULL, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
          [
            contentKey,
            fingerprint,
            claim.mode,
            claim.owner,
            claim.now,
            claim.tokenFingerprint,
            claim.leaseUntil,
          ],
        );
        if (inserted.rowCount === 1) return { claimed: true as const };
        const r = await c.query<TaskRow>(
          'SELECT * FROM pt_task WHERE content_key = $1 AND fingerprint = $2 FOR UPDATE',
          [contentKey, fingerprint],
        );
        const row = r.rows[0];
        // Finished (deleted) between the two statements: insert again.
        if (row === undefined) continue;
        const existing = toTask(row);
        if (!claimReplaces(existing, claim)) return { claimed: false as const, task: existing };
        break;
      }
      await c.query(
        `UPDATE pt_task SET scan_id = NULL, mode = $1, owner = $2, submitted_at = $3, last_polled_at = NULL,
           token_fp = $6, lease_until = $7
         WHERE content_key = $4 AND fingerprint = $5`,
        [
          claim.mode,
          claim.owner,
          claim.now,
          contentKey,
          fingerprint,
          claim.tokenFingerprint,
          claim.leaseUntil,
        ],
      );
      return { claimed: true as const };
    });
  }

  async adopt(
    contentKey: string,
    fingerprint: string,
    scanId: string,
    owner: string,
    now: number,
    leaseUntil: number,
  ): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE pt_task SET owner = $4, lease_until = $6
       WHERE content_key = $1 AND fingerprint = $2 AND scan_id = $3
         AND (owner = $4 OR lease_until IS NULL OR lease_until <= $5)`,
      [contentKey, fingerprint, scanId, owner, now, leaseUntil],
    );
    return r.rowCount === 1;
  }

  async renew(owner: string, leaseUntil: number): Promise<number> {
    return (
      (await this.pool.query('UPDATE pt_task SET lease_until = $1 WHERE owner = $2', [leaseUntil, owner]))
        .rowCount ?? 0
    );
  }

  async tokenFingerprints(
    submittedSince: number,
    leasedAt?: number,
  ): Promise<Array<{ tokenFingerprint: string; tasks: number }>> {
    const r = await this.pool.query<{ token_fp: string; n: number }>(
      `SELECT token_fp, count(*) AS n FROM pt_task
       WHERE scan_id IS NOT NULL AND token_fp IS NOT NULL AND submitted_at >= $1
         AND ($2::bigint IS NULL OR lease_until > $2::bigint)
       GROUP BY token_fp ORDER BY token_fp COLLATE "C"`,
      [submittedSince, leasedAt ?? null],
    );
    return r.rows.map((x) => ({ tokenFingerprint: x.token_fp, tasks: x.n }));
  }

  async setScanId(
    contentKey: string,
    fingerprint: string,
    owner: string,
    scanId: string,
    now: number,
  ): Promise<void> {
    await this.pool.query(
      'UPDATE pt_task SET scan_id = $1, submitted_at = $2 WHERE content_key = $3 AND fingerprint = $4 AND owner = $5',
      [scanId, now, contentKey, fingerprint, owner],
    );
  }

  async touch(contentKey: string, fingerprint: string, now: number): Promise<void> {
    await this.pool.query(
      'UPDATE pt_task SET last_polled_at = $1 WHERE content_key = $2 AND fingerprint = $3',
      [now, contentKey, fingerprint],
    );
  }

  async finish(
    contentKey: string,
    fingerprint: string,
    scanId: string,
    finishedAt: number,
    outcome: string,
  ): Promise<void> {
    const prune = ++this.sincePrune >= HISTORY_PRUNE_EVERY;
    if (prune) this.sincePrune = 0;
    await this.pool.query(
      `WITH gone AS (
         DELETE FROM pt_task WHERE content_key = $1 AND fingerprint = $2 AND scan_id = $3
         RETURNING owner, submitted_at)
       INSERT INTO pt_task_history (scan_id, owner, submitted_at, finished_at, outcome)
       SELECT $3, owner, submitted_at, $4, $5 FROM gone`,
      [contentKey, fingerprint, scanId, finishedAt, outcome],
    );
    if (prune)
      await this.pool.query('DELETE FROM pt_task_history WHERE finished_at < $1', [
        finishedAt - HISTORY_KEEP_MS,
      ]);
  }

  async release(contentKey: string, fingerprint: string, owner: string): Promise<void> {
    await this.pool.query(
      'DELETE FROM pt_task WHERE content_key = $1 AND fingerprint = $2 AND owner = $3 AND scan_id IS NULL',
      [contentKey, fingerprint, owner],
    );
  }

  async remove(contentKey: string, fingerprint: string, scanId: string): Promise<void> {
    await this.pool.query(
      'DELETE FROM pt_task WHERE content_key = $1 AND fingerprint = $2 AND scan_id = $3',
      [contentKey, fingerprint, scanId],
    );
  }

  async purge(before: number): Promise<number> {
    return (await this.pool.query('DELETE FROM pt_task WHERE submitted_at < $1', [before])).rowCount ?? 0;
  }

  async count(): Promise<number> {
    return (await this.pool.query<{ n: number }>('SELECT count(*) AS n FROM pt_task')).rows[0]?.n ?? 0;
  }
}

export class PgPtLoadStore implements PtLoadStore {
  constructor(private readonly pool: pg.Pool) {}

  async report(l: PtProcessLoad): Promise<void> {
    await this.pool.query(
      `INSERT INTO pt_process (owner, front_end, inflight, waiting, window_limit, window_max,
         submitted_total, refused_total, started_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (owner) DO UPDATE SET front_end = excluded.front_end, inflight = excluded.inflight,
         waiting = excluded.waiting, window_limit = excluded.window_limit, window_max = excluded.window_max,
         submitted_total = excluded.submitted_total, refused_total = excluded.refused_total,
         updated_at = excluded.updated_at`,
      [
        l.owner,
        l.frontEnd,
        l.inflight,
        l.waiting,
        l.windowLimit,
        l.windowMax,
        l.submittedTotal,
        l.refusedTotal,
        l.startedAt,
        l.updatedAt,
      ],
    );
  }

  async remove(owner: string): Promise<void> {
    await this.pool.query('DELETE FROM pt_process WHERE owner = $1', [owner]);
  }

  async snapshot(now: number, options: PtLoadWindows = {}): Promise<PtLoadSnapshot> {
    const w = loadWindows(options);
    await this.pool.query('DELETE FROM pt_process WHERE updated_at < $1', [now - HISTORY_KEEP_MS]);
    const since = now - w.rateWindowMs;
    const [processes, flight, subFlight, subDone, done, ages, recent] = await Promise.all([
      this.pool.query<PtProcessRow>('SELECT * FROM pt_process WHERE updated_at >= $1 ORDER BY started_at', [
        now - w.aliveMs,
      ]),
      this.pool.query<{ tasks: number; claims: number; oldest: number | null }>(
        `SELECT count(scan_id) AS tasks, count(*) - count(scan_id) AS claims,
           min(CASE WHEN scan_id IS NOT NULL THEN submitted_at END) AS oldest FROM pt_task`,
      ),
      this.pool.query<{ n: number }>(
        'SELECT count(*) AS n FROM pt_task WHERE scan_id IS NOT NULL AND submitted_at >= $1',
        [since],
      ),
      this.pool.query<{ n: number }>('SELECT count(*) AS n FROM pt_task_history WHERE submitted_at >= $1', [
        since,
      ]),
      this.pool.query<{ n: number }>('SELECT count(*) AS n FROM pt_task_history WHERE finished_at >= $1', [
        since,
      ]),
      this.agesSince(now - w.ageWindowMs),
      this.agesSince(since),
    ]);
    return ptLoadSnapshot(now, w, {
      processes: processes.rows,
      flight: flight.rows[0],
      submittedRecent: (subFlight.rows[0]?.n ?? 0) + (subDone.rows[0]?.n ?? 0),
      finishedRecent: done.rows[0]?.n ?? 0,
      finishedAges: ages,
      recentAges: recent,
    });
  }

  private async agesSince(since: number): Promise<number[]> {
    const r = await this.pool.query<{ age: number }>(
      "SELECT finished_at - submitted_at AS age FROM pt_task_history WHERE finished_at >= $1 AND outcome = 'verdict' ORDER BY age",
      [since],
    );
    return r.rows.map((x) => x.age);
  }
}

export class PgAllowList implements AllowList {
  constructor(
    private readonly pool: pg.Pool,
    private readonly now: () => number = Date.now,
  ) {}

  async has(sha256: string): Promise<boolean> {
    const r = await this.pool.query({
      name: 'allow_has',
      text: 'SELECT 1 FROM allow_hash WHERE sha256 = $1',
      values: [sha256.toLowerCase()],
    });
    return (r.rowCount ?? 0) > 0;
  }

  async revision(): Promise<string> {
    const r = await this.pool.query<{ n: number; last: number | null }>({
      name: 'allow_revision',
      text: 'SELECT count(*) AS n, max(added_at) AS last FROM allow_hash',
    });
    const row = r.rows[0];
    return `${row?.n ?? 0}.${row?.last ?? 0}`;
  }

  async add(
    hashes: readonly string[],
    by: string,
    options: { quarantineId?: string; note?: string } = {},
  ): Promise<string[]> {
    const normalised = hashes.map((h) => {
      const sha256 = h.toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw new TypeError(`not a SHA-256 hex digest: ${h}`);
      return sha256;
    });
    const at = this.now();
    return inTransaction(this.pool, async (c) => {
      const added: string[] = [];
      for (const sha256 of normalised) {
        const r = await c.query(
          `INSERT INTO allow_hash (sha256, added_at, added_by, quarantine_id, note) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT DO NOTHING`,
          [sha256, at, by, options.quarantineId ?? null, options.note ?? null],
        );
        if ((r.rowCount ?? 0) > 0) added.push(sha256);
      }
      return added;
    });
  }

  async remove(sha256: string): Promise<boolean> {
    return (
      ((await this.pool.query('DELETE FROM allow_hash WHERE sha256 = $1', [sha256.toLowerCase()])).rowCount ??
        0) > 0
    );
  }

  async list(): Promise<AllowedHash[]> {
    const r = await this.pool.query<{
      sha256: string;
      added_at: number;
      added_by: string;
      quarantine_id: string | null;
      note: string | null;
    }>('SELECT * FROM allow_hash ORDER BY added_at, sha256');
    return r.rows.map((x) => ({
      sha256: x.sha256,
      addedAt: x.added_at,
      addedBy: x.added_by,
      ...(x.quarantine_id !== null ? { quarantineId: x.quarantine_id } : {}),
      ...(x.note !== null ? { note: x.note } : {}),
    }));
  }
}

/** Fingerprints every node must share, and cluster-wide job leases (see ClusterStore). */
export class PgClusterStore implements ClusterStore {
  constructor(private readonly pool: pg.Pool) {}

  async getFingerprint(name: string): Promise<string | undefined> {
    const r = await this.pool.query<{ value: string }>(
      'SELECT value FROM cluster_fingerprint WHERE name = $1',
      [name],
    );
    return r.rows[0]?.value;
  }

  async claimFingerprint(name: string, value: string, now: number): Promise<string> {
    const r = await this.pool.query<{ value: string }>(
      `INSERT INTO cluster_fingerprint (name, value, updated_at) VALUES ($1, $2, $3)
       ON CONFLICT (name) DO UPDATE SET name = cluster_fingerprint.name RETURNING value`,
      [name, value, now],
    );
    const row = r.rows[0];
    if (row === undefined) throw new Error(`cluster_fingerprint: no row for ${name}`);
    return row.value;
  }

  async setFingerprint(name: string, value: string, now: number): Promise<void> {
    await this.pool.query(
      `INSERT INTO cluster_fingerprint (name, value, updated_at) VALUES ($1, $2, $3)
       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
      [name, value, now],
    );
  }

  async tryJobLease(job: string, owner: string, now: number, until: number): Promise<boolean> {
    const r = await this.pool.query(
      `INSERT INTO cluster_job (job, owner, lease_until) VALUES ($1, $2, $4)
       ON CONFLICT (job) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
         WHERE cluster_job.lease_until <= $3 OR cluster_job.owner = excluded.owner`,
      [job, owner, now, until],
    );
    return r.rowCount === 1;
  }

  async releaseJobLease(job: string, owner: string): Promise<void> {
    await this.pool.query('DELETE FROM cluster_job WHERE job = $1 AND owner = $2', [job, owner]);
  }
}
