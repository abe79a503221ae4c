import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../../config/schema.js';
import type { PtLoadSnapshot } from '../../core/state-records.js';
import { openState } from '../compose/state.js';
import { writeLine, type CliIo } from '../io.js';

/** What one refresh of `sandgate sandbox health --watch` shows (also its --json line). */
export interface WatchReport {
  readonly time: string;
  readonly url: string;
  readonly version: string | undefined;
  /** When the version was last looked up (ms ago). */
  readonly versionAgeMs: number | undefined;
  /** Tasks at the appliance (every process on this state database). */
  readonly inFlight: number;
  /** Submissions being uploaded (claimed, no scan_id yet). */
  readonly submitting: number;
  readonly oldestInFlightMs: number | undefined;
  /** Submissions waiting in sandgate for a window slot (every process). */
  readonly waiting: number;
  readonly window: number;
  readonly windowMax: number;
  /** Per second over the last minute. */
  readonly submittedPerSec: number;
  readonly finishedPerSec: number;
  /** 429/503 per second since the previous refresh (undefined on the first). */
  readonly refusedPerSec: number | undefined;
  /** Task age now (last minute) and as usual (last 15 minutes), ms. */
  readonly ageP50Ms: number | undefined;
  readonly ageP99Ms: number | undefined;
  readonly usualAgeP50Ms: number | undefined;
  readonly bottleneck: 'none' | 'sandgate' | 'appliance';
  readonly why: string;
  readonly processes: readonly {
    readonly frontEnd: string;
    readonly owner: string;
    readonly inflight: number;
    readonly waiting: number;
    readonly window: number;
    readonly windowMax: number;
    readonly submitted: number;
    readonly refused: number;
  }[];
}

function pct(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Where the time goes. The appliance is the bottleneck when it refuses work or its task ages grew
 * (sandgate's windows then shrink on their own); sandgate is when submissions wait while every
 * window is at its ceiling and the appliance answers as fast as usual (raise inflight.max).
 */
export function bottleneck(
  r: Omit<WatchReport, 'bottleneck' | 'why' | 'time' | 'url' | 'version' | 'versionAgeMs'>,
): { bottleneck: WatchReport['bottleneck']; why: string } {
  const slower =
    r.ageP50Ms !== undefined && r.usualAgeP50Ms !== undefined && r.ageP50Ms > 1.5 * r.usualAgeP50Ms;
  if (r.refusedPerSec !== undefined && r.refusedPerSec > 0) {
    return {
      bottleneck: 'appliance',
      why: 'it refuses submissions (429/503); sandgate has narrowed its windows and retries them',
    };
  }
  if (r.waiting === 0) {
    return slower
      ? { bottleneck: 'none', why: 'nothing waits in sandgate, but tasks take longer than usual' }
      : { bottleneck: 'none', why: 'nothing waits in sandgate' };
  }
  if (slower) {
    return {
      bottleneck: 'appliance',
      why: 'tasks take longer than usual (queued on the appliance); sandgate has narrowed its windows',
    };
  }
  if (r.window >= r.windowMax) {
    return {
      bottleneck: 'sandgate',
      why: 'submissions wait with every window at its ceiling while the appliance answers as usual: raise scanners.ptSandbox.inflight.max (docs/pt-sandbox.md, "Sizing")',
    };
  }
  return {
    bottleneck: 'sandgate',
    why: 'submissions wait while the windows grow back (after start, or after the appliance pushed back)',
  };
}

export function watchReport(
  config: Config,
  snap: PtLoadSnapshot,
  version: { version: string; checkedAt: number } | undefined,
  previous: { at: number; refused: number } | undefined,
): WatchReport {
  const refused = snap.processes.reduce((n, p) => n + p.refusedTotal, 0);
  const seconds = snap.rateWindowMs / 1000;
  const base = {
    inFlight: snap.tasksInFlight,
    submitting: snap.claims,
    oldestInFlightMs: snap.oldestInFlightMs,
    waiting: snap.processes.reduce((n, p) => n + p.waiting, 0),
    window: Math.floor(snap.processes.reduce((n, p) => n + Math.floor(p.windowLimit), 0)),
    windowMax: snap.processes.reduce((n, p) => n + p.windowMax, 0),
    submittedPerSec: round(snap.submittedRecent / seconds),
    finishedPerSec: round(snap.finishedRecent / seconds),
    refusedPerSec:
      previous === undefined || snap.at <= previous.at
        ? undefined
        : round(Math.max(0, refused - previous.refused) / ((snap.at - previous.at) / 1000)),
    ageP50Ms: pct(snap.recentAges, 50),
    ageP99Ms: pct(snap.recentAges, 99),
    usualAgeP50Ms: pct(snap.finishedAges, 50),
    processes: snap.processes.map((p) => ({
      frontEnd: p.frontEnd,
      owner: p.owner,
      inflight: p.inflight,
      waiting: p.waiting,
      window: Math.floor(p.windowLimit),
      windowMax: p.windowMax,
      submitted: p.submittedTotal,
      refused: p.refusedTotal,
    })),
  };
  return {
    time: new Date(snap.at).toISOString(),
    url: config.scanners.ptSandbox.url ?? '(scanners.ptSandbox.url not set)',
    version: version?.version,
    versionAgeMs: version === undefined ? undefined : Math.max(0, snap.at - version.checkedAt),
    ...base,
    ...bottleneck(base),
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

function secs(ms: number | undefined): string {
  return ms === undefined ? '-' : `${(ms / 1000).toFixed(1)} s`;
}

export function formatWatch(r: WatchReport): string[] {
  const lines = [
    `${r.time}  PT Sandbox ${r.url}`,
    `version     ${r.version ?? '-'}${r.versionAgeMs !== undefined ? ` (looked up ${secs(r.versionAgeMs)} ago)` : ''}`,
    `in flight   ${r.inFlight} tasks at the appliance (oldest ${secs(r.oldestInFlightMs)}), ${r.submitting} being submitted`,
    `waiting     ${r.waiting} submissions in sandgate for a window slot`,
    `window      ${r.window} of ${r.windowMax} (all processes)`,
    `rate        submitted ${r.submittedPerSec}/s, finished ${r.finishedPerSec}/s (last minute); refused ${r.refusedPerSec ?? '-'}/s`,
    `task age    p50 ${secs(r.ageP50Ms)}, p99 ${secs(r.ageP99Ms)} (last minute); usual p50 ${secs(r.usualAgeP50Ms)} (15 minutes)`,
    `bottleneck  ${r.bottleneck}: ${r.why}`,
    'processes',
  ];
  if (r.processes.length === 0) lines.push('  (none reporting)');
  for (const p of r.processes) {
    lines.push(
      `  ${p.frontEnd.padEnd(7)} ${p.owner.padEnd(24)} in flight ${p.inflight}, waiting ${p.waiting}, window ${p.window}/${p.windowMax}, submitted ${p.submitted}, refused ${p.refused}`,
    );
  }
  return lines;
}

/**
 * `sandgate sandbox health --watch`: the host's PT Sandbox load from the state database (pt_task,
 * pt_task_history, pt_process, scanner_version), refreshed every `intervalMs`, `count` times (or
 * until interrupted). It does not call the appliance, so it works when the appliance does not.
 */
export async function watch(
  config: Config,
  io: CliIo,
  options: { intervalMs: number; count: number | undefined; json: boolean },
): Promise<void> {
  const state = await openState(config);
  try {
    const load = state.ptLoad;
    const versions = state.scannerVersions;
    let previous: { at: number; refused: number } | undefined;
    for (let i = 0; options.count === undefined || i < options.count; i++) {
      if (i > 0) await sleep(options.intervalMs);
      const snap = await load.snapshot(Date.now());
      const report = watchReport(config, snap, await versions.get('pt-sandbox'), previous);
      previous = { at: snap.at, refused: snap.processes.reduce((n, p) => n + p.refusedTotal, 0) };
      if (options.json) {
        writeLine(io.stdout, JSON.stringify(report));
        continue;
      }
      if (io.stdout.isTTY === true) io.stdout.write('\x1b[H\x1b[2J');
      else if (i > 0) writeLine(io.stdout, '');
      for (const line of formatWatch(report)) writeLine(io.stdout, line);
    }
  } finally {
    await state.close();
  }
}
