import type { PtLoadSnapshot, PtLoadWindows, PtProcessLoad } from '../core/state-records.js';
import { HISTORY_KEEP_MS } from './pt-tasks.js';

/** A pt_process row as both backends store it (SQLite and PostgreSQL use the same columns). */
export interface PtProcessRow {
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

export const toProcessLoad = (r: PtProcessRow): PtProcessLoad => ({
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
});

/** The snapshot's windows with their defaults: processes alive within, rates over, ages over. */
export function loadWindows(options: PtLoadWindows): Required<PtLoadWindows> {
  return {
    aliveMs: options.aliveMs ?? 30_000,
    rateWindowMs: options.rateWindowMs ?? 60_000,
    ageWindowMs: Math.min(options.ageWindowMs ?? HISTORY_KEEP_MS, HISTORY_KEEP_MS),
  };
}

/** What each backend reads for a snapshot. */
export interface PtLoadRows {
  readonly processes: readonly PtProcessRow[];
  readonly flight: { tasks: number; claims: number; oldest: number | null } | undefined;
  readonly submittedRecent: number;
  readonly finishedRecent: number;
  readonly finishedAges: number[];
  readonly recentAges: number[];
}

export function ptLoadSnapshot(now: number, w: Required<PtLoadWindows>, rows: PtLoadRows): PtLoadSnapshot {
  const flight = rows.flight ?? { tasks: 0, claims: 0, oldest: null };
  return {
    at: now,
    processes: rows.processes.map(toProcessLoad),
    tasksInFlight: flight.tasks,
    claims: flight.claims,
    oldestInFlightMs: flight.oldest === null ? undefined : Math.max(0, now - flight.oldest),
    submittedRecent: rows.submittedRecent,
    finishedRecent: rows.finishedRecent,
    finishedAges: rows.finishedAges,
    recentAges: rows.recentAges,
    rateWindowMs: w.rateWindowMs,
    ageWindowMs: w.ageWindowMs,
  };
}
