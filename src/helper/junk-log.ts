import type { Logger } from '../core/logger.js';

/** Junk lines logged per minute; the rest are counted. */
const JUNK_LOG_PER_MINUTE = 20;

/** Logs lines without a usable sequence number, up to JUNK_LOG_PER_MINUTE a minute; counts the rest. */
export class JunkLog {
  private junkWindowStart = 0;
  private junkLogged = 0;
  private junkSuppressed = 0;

  constructor(
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

  junk(fields: { reason: string; bytes: number }): void {
    const now = this.now();
    if (now - this.junkWindowStart >= 60_000) {
      if (this.junkSuppressed > 0) {
        this.log.warn(
          { event: 'helper.junk_suppressed', count: this.junkSuppressed },
          'more junk lines ignored',
        );
      }
      this.junkWindowStart = now;
      this.junkLogged = 0;
      this.junkSuppressed = 0;
    }
    if (this.junkLogged < JUNK_LOG_PER_MINUTE) {
      this.junkLogged++;
      this.log.warn(
        { event: 'helper.junk_line', ...fields },
        'ignored a line without a usable sequence number',
      );
    } else {
      this.junkSuppressed++;
    }
  }
}
