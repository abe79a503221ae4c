import type { CoreState } from './core-state.js';

/** How often a broken-config helper repeats why it answers every FILE with the tempfail reply. */
const BROKEN_NOTICE_EVERY_MS = 60_000;

/** Broken-config mode: the `* ` line saying why every FILE gets the tempfail reply, at most once a minute. */
export class BrokenNotice {
  private lastBrokenNotice = 0;

  constructor(
    private readonly now: () => number,
    private readonly info: (text: string) => void,
  ) {}

  send(core: CoreState | undefined): void {
    const now = this.now();
    if (this.lastBrokenNotice !== 0 && now - this.lastBrokenNotice < BROKEN_NOTICE_EVERY_MS) return;
    this.lastBrokenNotice = now;
    const why = core !== undefined && core.evaluator === undefined ? core.brokenReason : 'no verdict core';
    this.info(
      `sandgate cannot scan: ${why}; answering every FILE with REJECTED until the helper is restarted`,
    );
  }
}
