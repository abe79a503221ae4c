import { HISTORY_KEEP_MS } from './pt-tasks.js';
import type { StateDb } from './db.js';

/** One process's PT Sandbox window and queue, as it last reported them (pt_process, migration 7). */
export interface PtProcessLoad {
  readonly owner: string;
  readonly frontEnd: string;
  /** Tasks it submitted and is polling. */
  readonly inflight: number;
  /** Submissions waiting in it for a window slot. */
  readonly waiting: number;
  readonly windowLimit: number;
  readonly windowMax: number;
  /** Tasks it created since it started. */
  readonly submittedTotal: number;
  /** Submissions the appliance refused (429/503) since it started. */
  readonly refusedTotal: number;
  readonly startedAt: number;
  readonly updatedAt: number;
}

/** What `sandgate sandbox health --watch` shows: the host's PT Sandbox load from the state database. */
export interface PtLoadSnapshot {
  readonly at: number;
  /** Processes that reported within `aliveMs`. */
  readonly processes: readonly PtProcessLoad[];
  /** pt_task rows with a scan_id: tasks at the appliance (every process). */
  readonly tasksInFlight: number;
  /** pt_task rows without one: submissions being uploaded. */
  readonly claims: number;
  /** Age of the oldest task in flight (ms), if any. */
  readonly oldestInFlightMs: number | undefined;
  /** Tasks submitted within the last `rateWindowMs` (in flight or finished). */
  readonly submittedRecent: number;
  /** Tasks finished within the last `rateWindowMs`. */
  readonly finishedRecent: number;
  /** Ages (ms) of tasks that ended with a verdict within the last `ageWindowMs`, sorted. */
  readonly finishedAges: readonly number[];
  /** The same within the last `rateWindowMs`: the age now, against the usual one above. */
  readonly recentAges: readonly number[];
  readonly rateWindowMs: number;
  readonly ageWindowMs: number;
}

interface ProcessRow {
  owner: string;
  front_end: string;
  inflight: number;
  waiting: number;
  window_limit: number;
  window_max: number;
  submitted_total: number;
  refused_total: number;
  started_at: number;
  updated_at: number;
}

/**
 * pt_process: each process's window and queue (written by the PT Sandbox scanner about once a
 * second while something changes, and every few seconds as a heartbeat), and the reads that put
 * it together with pt_task and pt_task_history for the watch.
 */
export class PtLoadStore {
  private readonly stmt;

  constructor(db: StateDb) {
    this.stmt = {
      upsert: db.prepare(
        `INSERT INTO pt_process (owner, front_end, inflight, waiting, window_limit, window_max,
           submitted_total, refused_total, started_at, updated_at)
         VALUES (@owner, @frontEnd, @inflight, @waiting, @windowLimit, @windowMax,
           @submittedTotal, @refusedTotal, @startedAt, @updatedAt)
         ON CONFLICT (owner) DO UPDATE SET front_end = excluded.front_end, inflight = excluded.inflight,
           waiting = excluded.waiting, window_limit = excluded.window_limit, window_max = excluded.window_max,
           submitted_total = excluded.submitted_total, refused_total = excluded.refused_total,
           updated_at = excluded.updated_at`,
      ),
      remove: db.prepare('DELETE FROM pt_process WHERE owner = ?'),
      pruneProcesses: db.prepare('DELETE FROM pt_process WHERE updated_at < ?'),
      processes: db.prepare<[number], ProcessRow>(
        'SELECT * FROM pt_process WHERE updated_at >= ? ORDER BY started_at',
      ),
      inFlight: db.prepare<[], { tasks: number; claims: number; oldest: number | null }>(
        `SELECT count(scan_id) AS tasks, count(*) - count(scan_id) AS claims,
           min(CASE WHEN scan_id IS NOT NULL THEN submitted_at END) AS oldest FROM pt_task`,
      ),
      submittedInFlight: db.prepare<[number], { n: number }>(
        'SELECT count(*) AS n FROM pt_task WHERE scan_id IS NOT NULL AND submitted_at >= ?',
      ),
      submittedFinished: db.prepare<[number], { n: number }>(
        'SELECT count(*) AS n FROM pt_task_history WHERE submitted_at >= ?',
      ),
      finished: db.prepare<[number], { n: number }>(
        'SELECT count(*) AS n FROM pt_task_history WHERE finished_at >= ?',
      ),
      ages: db.prepare<[number], { age: number }>(
        "SELECT finished_at - submitted_at AS age FROM pt_task_history WHERE finished_at >= ? AND outcome = 'verdict' ORDER BY age",
      ),
    };
  }

  report(load: PtProcessLoad): void {
    this.stmt.upsert.run(load);
  }

  remove(owner: string): void {
    this.stmt.remove.run(owner);
  }

  /** The load now: processes that reported within `aliveMs`, rates over `rateWindowMs`, ages over `ageWindowMs`. */
  snapshot(
    now: number,
    options: { aliveMs?: number; rateWindowMs?: number; ageWindowMs?: number } = {},
  ): PtLoadSnapshot {
    const aliveMs = options.aliveMs ?? 30_000;
    const rateWindowMs = options.rateWindowMs ?? 60_000;
    const ageWindowMs = Math.min(options.ageWindowMs ?? HISTORY_KEEP_MS, HISTORY_KEEP_MS);
    // Rows of processes gone for longer than the history are of no use to anyone.
    this.stmt.pruneProcesses.run(now - HISTORY_KEEP_MS);
    const flight = this.stmt.inFlight.get() ?? { tasks: 0, claims: 0, oldest: null };
    const since = now - rateWindowMs;
    return {
      at: now,
      processes: this.stmt.processes.all(now - aliveMs).map((r) => ({
        owner: r.owner,
        frontEnd: r.front_end,
        inflight: r.inflight,
        waiting: r.waiting,
        windowLimit: r.window_limit,
        windowMax: r.window_max,
        submittedTotal: r.submitted_total,
        refusedTotal: r.refused_total,
        startedAt: r.started_at,
        updatedAt: r.updated_at,
      })),
      tasksInFlight: flight.tasks,
      claims: flight.claims,
      oldestInFlightMs: flight.oldest === null ? undefined : Math.max(0, now - flight.oldest),
      submittedRecent:
        (this.stmt.submittedInFlight.get(since)?.n ?? 0) + (this.stmt.submittedFinished.get(since)?.n ?? 0),
      finishedRecent: this.stmt.finished.get(since)?.n ?? 0,
      finishedAges: this.stmt.ages.all(now - ageWindowMs).map((r) => r.age),
      recentAges: this.stmt.ages.all(since).map((r) => r.age),
      rateWindowMs,
      ageWindowMs,
    };
  }
}
