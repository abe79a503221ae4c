import type { Logger } from '../core/logger.js';
import type { QuarantineStore } from '../core/ports.js';

export interface RetentionLimits {
  readonly maxAgeMs: number;
  readonly maxTotalBytes: number;
}

/**
 * Runs the quarantine's retention (age, then total size, oldest first) now and every `intervalMs`.
 * One pass at a time: a tick that finds the previous pass still running is skipped.
 */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<string[]> | undefined;

  constructor(
    private readonly store: QuarantineStore,
    private readonly limits: RetentionLimits,
    private readonly log: Logger,
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
      return [];
    }
  }
}
