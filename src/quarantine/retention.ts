import type { Logger } from '../core/logger.js';
import type { QuarantineStore } from '../store/quarantine-store.js';

export interface RetentionLimits {
  readonly maxAgeMs: number;
  readonly maxTotalBytes: number;
}

/** Runs the quarantine's retention (age, then total size, oldest first) now and every `intervalMs`. */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: QuarantineStore,
    private readonly limits: RetentionLimits,
    private readonly log: Logger,
  ) {}

  /** One pass; returns the removed ids, oldest first. Never throws (a failed pass is logged). */
  runOnce(): string[] {
    try {
      const removed = this.store.enforceRetention(this.limits);
      if (removed.length > 0) {
        this.log.info(
          { event: 'quarantine.retention', removed: removed.length, first: removed[0], last: removed.at(-1) },
          'quarantine retention removed old items',
        );
      }
      return removed;
    } catch (err) {
      this.log.error({ event: 'quarantine.retention_failed', err }, 'quarantine retention failed');
      return [];
    }
  }

  start(intervalMs: number): void {
    if (this.timer !== undefined) return;
    this.runOnce();
    this.timer = setInterval(() => this.runOnce(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}
