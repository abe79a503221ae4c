import { setTimeout as sleep } from 'node:timers/promises';
import type { Finding } from '../core/outcome.js';
import type {
  CachedVerdict,
  FirstFailureStore,
  InflightStore,
  VerdictKey,
  VerdictStore,
} from '../core/ports.js';
import type { StateDb } from './db.js';

/**
 * The verdict cache in the state database. Expired rows are ignored on read and pruned by prune().
 * `scanner_version` (migration 6) is the scanner version that reached the finding: shown with a
 * cache hit, never part of the key.
 */
export class SqliteVerdictStore implements VerdictStore {
  private readonly getStmt;
  private readonly putStmt;
  private readonly pruneStmt;

  constructor(db: StateDb) {
    this.getStmt = db.prepare<
      [string, string, string, number],
      { finding: string; scanner_version: string | null }
    >(
      'SELECT finding, scanner_version FROM verdict_cache WHERE scanner = ? AND fingerprint = ? AND content_key = ? AND expires_at > ?',
    );
    this.putStmt = db.prepare(
      `INSERT INTO verdict_cache (scanner, fingerprint, content_key, finding, created_at, expires_at, scanner_version)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (scanner, fingerprint, content_key)
       DO UPDATE SET finding = excluded.finding, created_at = excluded.created_at, expires_at = excluded.expires_at,
         scanner_version = excluded.scanner_version`,
    );
    this.pruneStmt = db.prepare('DELETE FROM verdict_cache WHERE expires_at <= ?');
  }

  async get(key: VerdictKey, now: number): Promise<CachedVerdict | undefined> {
    const row = this.getStmt.get(key.scanner, key.fingerprint, key.contentKey, now);
    if (row === undefined) return undefined;
    const finding = JSON.parse(row.finding) as Finding;
    return row.scanner_version !== null ? { finding, version: row.scanner_version } : { finding };
  }

  async put(key: VerdictKey, verdict: CachedVerdict, now: number, expiresAt: number): Promise<void> {
    const { finding } = verdict;
    if (finding.kind === 'failed' || finding.kind === 'skipped') return;
    this.putStmt.run(
      key.scanner,
      key.fingerprint,
      key.contentKey,
      JSON.stringify(finding),
      now,
      expiresAt,
      verdict.version ?? null,
    );
  }

  async prune(now: number): Promise<number> {
    return this.pruneStmt.run(now).changes;
  }
}

/** Cross-process single-flight rows with a lease; an expired lease (crashed holder) can be taken over. */
export class SqliteInflightStore implements InflightStore {
  private readonly acquireStmt;
  private readonly refreshStmt;
  private readonly releaseStmt;
  private readonly heldStmt;

  constructor(db: StateDb) {
    this.acquireStmt = db.prepare(
      `INSERT INTO inflight_scan (scanner, fingerprint, content_key, owner, started_at, expires_at)
       VALUES (@scanner, @fingerprint, @contentKey, @owner, @now, @leaseUntil)
       ON CONFLICT (scanner, fingerprint, content_key) DO UPDATE
         SET owner = excluded.owner, started_at = excluded.started_at, expires_at = excluded.expires_at
         WHERE inflight_scan.expires_at <= @now`,
    );
    this.refreshStmt = db.prepare(
      'UPDATE inflight_scan SET expires_at = ? WHERE scanner = ? AND fingerprint = ? AND content_key = ? AND owner = ?',
    );
    this.releaseStmt = db.prepare(
      'DELETE FROM inflight_scan WHERE scanner = ? AND fingerprint = ? AND content_key = ? AND owner = ?',
    );
    this.heldStmt = db.prepare<[string, string, string, number], { n: number }>(
      'SELECT 1 AS n FROM inflight_scan WHERE scanner = ? AND fingerprint = ? AND content_key = ? AND expires_at > ?',
    );
  }

  async tryAcquire(key: VerdictKey, owner: string, now: number, leaseUntil: number): Promise<boolean> {
    return this.acquireStmt.run({ ...key, owner, now, leaseUntil }).changes === 1;
  }

  async refresh(key: VerdictKey, owner: string, leaseUntil: number): Promise<void> {
    this.refreshStmt.run(leaseUntil, key.scanner, key.fingerprint, key.contentKey, owner);
  }

  async release(key: VerdictKey, owner: string): Promise<void> {
    this.releaseStmt.run(key.scanner, key.fingerprint, key.contentKey, owner);
  }

  async isHeld(key: VerdictKey, now: number): Promise<boolean> {
    return this.heldStmt.get(key.scanner, key.fingerprint, key.contentKey, now) !== undefined;
  }

  /**
   * SQLite has no notifications: polls the row (every 20 ms at first, backing off to 250 ms) until
   * it is released or runs out, maxWaitMs passes, or the signal aborts.
   */
  async waitForRelease(
    key: VerdictKey,
    options: { readonly maxWaitMs: number; readonly signal?: AbortSignal },
  ): Promise<void> {
    const until = Date.now() + Math.max(0, options.maxWaitMs);
    const { signal } = options;
    for (let wait = 20; ; wait = Math.min(wait * 2, 250)) {
      if (signal?.aborted === true) return;
      const now = Date.now();
      if (!(await this.isHeld(key, now)) || now >= until) return;
      await sleep(Math.min(wait, until - now), undefined, signal ? { signal } : {}).catch(() => undefined);
    }
  }
}

/** Clears waiting beyond this many are written at once rather than on the timer. */
const MAX_PENDING_CLEARS = 10_000;

/**
 * First failures per content key. touch() writes at once; clear() (a clean verdict, i.e. almost
 * every message, and almost never a key with a row) is batched: the keys wait in memory and one
 * read per `flushMs` asks whether the table has any row at all, deleting them only then. A read
 * per message cost 10-30 µs in the relay (two fcntl locks under WAL). touch() flushes first, so
 * within this process a clear is never overtaken by a later failure; another process sees it up
 * to `flushMs` late, as if the clean verdict had come that much later. close() flushes.
 */
export class SqliteFirstFailureStore implements FirstFailureStore {
  private readonly touchStmt;
  private readonly anyStmt;
  private readonly clearMany;
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    db: StateDb,
    private readonly flushMs = 1000,
  ) {
    this.touchStmt = db.prepare<[string, number, number], { first_at: number }>(
      `INSERT INTO first_failure (content_key, first_at, last_at) VALUES (?, ?, ?)
       ON CONFLICT (content_key) DO UPDATE SET last_at = excluded.last_at
       RETURNING first_at`,
    );
    this.anyStmt = db.prepare<[], { n: number }>('SELECT 1 AS n FROM first_failure LIMIT 1');
    const clearStmt = db.prepare('DELETE FROM first_failure WHERE content_key = ?');
    this.clearMany = db.transaction((keys: readonly string[]) => {
      for (const k of keys) clearStmt.run(k);
    });
  }

  async touch(contentKey: string, now: number): Promise<number> {
    this.flushNow();
    const row = this.touchStmt.get(contentKey, now, now);
    return row?.first_at ?? now;
  }

  clear(contentKey: string): void {
    // After close() the database is gone; an evaluation still finishing has nothing to clear into.
    if (this.closed) return;
    this.pending.add(contentKey);
    if (this.pending.size >= MAX_PENDING_CLEARS) {
      this.flushNow();
      return;
    }
    this.timer ??= setTimeout(() => this.flushSoon(), this.flushMs).unref();
  }

  /** Writes the waiting clears now. Rejects with what SQLite throws; the keys then stay waiting. */
  async flush(): Promise<void> {
    this.flushNow();
  }

  /** Flushes; clears after it go nowhere (the state's close() calls it before the database closes). */
  close(): void {
    this.closed = true;
    this.flushNow();
  }

  private flushNow(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size === 0) return;
    if (this.anyStmt.get() !== undefined) this.clearMany([...this.pending]);
    this.pending.clear();
  }

  /** The timer's flush: a failure (the database busy beyond its timeout) keeps the keys for the next try. */
  private flushSoon(): void {
    this.timer = undefined;
    try {
      this.flushNow();
    } catch {
      if (!this.closed) this.timer = setTimeout(() => this.flushSoon(), this.flushMs).unref();
    }
  }
}
