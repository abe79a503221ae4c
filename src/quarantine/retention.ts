import type { Logger } from '../core/logger.js';
import type { ClusterStore, QuarantineStore } from '../core/ports.js';

export interface RetentionLimits {
  readonly maxAgeMs: number;
  readonly maxTotalBytes: number;
}

/** The job lease's name in ClusterStore. */
export const RETENTION_JOB = 'quarantine-retention';

/**
 * The cluster-wide job lease: each pass first takes the lease of RETENTION_JOB for `holdMs`
 * (ClusterStore.tryJobLease) and keeps it after the pass, so of the processes sharing the state
 * one runs the passes (it renews its own lease at its next tick) and the others skip theirs; when
 * that process stops, another takes over once the lease ran out. A failed pass gives the lease up.
 */
export interface RetentionLease {
  readonly cluster: Pick<ClusterStore, 'tryJobLease' | 'releaseJobLease'>;
  /** Identifies this process (unique per process and start). */
  readonly owner: string;
  readonly holdMs: number;
  readonly now?: () => number;
}

/**
 * Runs the quarantine's retention (age, then total size, oldest first) now and every `intervalMs`.
 * One pass at a time: a tick that finds the previous pass still running is skipped; with a lease,
 * one pass at a time for every process on the state.
 */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<string[]> | undefined;

  constructor(
    private readonly store: QuarantineStore,
    private readonly limits: RetentionLimits,
    private readonly log: Logger,
    private readonly lease?: RetentionLease,
  ) {}

  /** One pass; returns the removed ids, oldest first. Never rejects (a failed pass is logged). */
  runOnce(): Promise<string[]> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  start(intervalMs: number): void {
    if (this.timer !== undefined) return;
    void this.runOnce();
    this.timer = setInterval(() => void this.runOnce(), intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for a pass still running. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private async pass(): Promise<string[]> {
    const lease = this.lease;
    try {
      if (lease !== undefined) {
        const now = (lease.now ?? Date.now)();
        if (!(await lease.cluster.tryJobLease(RETENTION_JOB, lease.owner, now, now + lease.holdMs))) {
          this.log.debug(
            { event: 'quarantine.retention_skipped' },
            'quarantine retention runs in another process on this state',
          );
          return [];
        }
      }
    } catch (err) {
      this.log.error({ event: 'quarantine.retention_failed', err }, 'quarantine retention failed');
      return [];
    }
    try {
      const removed = await this.store.enforceRetention(this.limits);
      if (removed.length > 0) {
        this.log.info(
          { event: 'quarantine.retention', removed: removed.length, first: removed[0], last: removed.at(-1) },
          'quarantine retention removed old items',
        );
      }
      return removed;
    } catch (err) {
      this.log.error({ event: 'quarantine.retention_failed', err }, 'quarantine retention failed');
      await lease?.cluster.releaseJobLease(RETENTION_JOB, lease.owner).catch(() => undefined);
      return [];
    }
  }
}
