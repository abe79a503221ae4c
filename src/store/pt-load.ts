import type { PtLoadStore } from '../core/ports.js';
import type { PtLoadSnapshot, PtLoadWindows, PtProcessLoad } from '../core/state-records.js';
import { HISTORY_KEEP_MS } from './pt-tasks.js';
import { loadWindows, ptLoadSnapshot, type PtProcessRow } from './pt-load-row.js';
import type { StateDb } from './db.js';

/**
 * pt_process: each process's window and queue (written by the PT Sandbox scanner about once a
 * second while something changes, and every few seconds as a heartbeat), and the reads that put
 * it together with pt_task and pt_task_history for the watch.
 */
export class SqlitePtLoadStore implements PtLoadStore {
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
      processes: db.prepare<[number], PtProcessRow>(
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

  async report(load: PtProcessLoad): Promise<void> {
    this.stmt.upsert.run(load);
  }

  async remove(owner: string): Promise<void> {
    this.stmt.remove.run(owner);
  }

  /** The load now: processes that reported within `aliveMs`, rates over `rateWindowMs`, ages over `ageWindowMs`. */
  async snapshot(now: number, options: PtLoadWindows = {}): Promise<PtLoadSnapshot> {
    const w = loadWindows(options);
    // Rows of processes gone for longer than the history are of no use to anyone.
    this.stmt.pruneProcesses.run(now - HISTORY_KEEP_MS);
    const since = now - w.rateWindowMs;
    return ptLoadSnapshot(now, w, {
      processes: this.stmt.processes.all(now - w.aliveMs),
      flight: this.stmt.inFlight.get(),
      submittedRecent:
        (this.stmt.submittedInFlight.get(since)?.n ?? 0) + (this.stmt.submittedFinished.get(since)?.n ?? 0),
      finishedRecent: this.stmt.finished.get(since)?.n ?? 0,
      finishedAges: this.stmt.ages.all(now - w.ageWindowMs).map((r) => r.age),
      recentAges: this.stmt.ages.all(since).map((r) => r.age),
    });
  }
}
