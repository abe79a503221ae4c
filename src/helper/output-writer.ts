import type { Writable } from 'node:stream';

/**
 * Writes protocol lines to stdout, each one whole line in one write, and tells when everything
 * written so far has been handed to the OS. Once stdout is gone, lines are dropped.
 */
export class OutputWriter {
  private outputOpen = true;
  private unflushed = 0;
  private onFlushed: (() => void) | undefined;

  constructor(private readonly output: Writable) {}

  /** stdout failed or closed: nothing more is written. */
  markClosed(): void {
    this.outputOpen = false;
  }

  write(line: string): void {
    if (!this.outputOpen) return;
    this.unflushed++;
    this.output.write(line, () => {
      this.unflushed--;
      if (this.unflushed === 0) this.onFlushed?.();
    });
  }

  /** Calls `done` once everything written so far has been handed to the OS; at once if stdout is gone. */
  whenFlushed(done: () => void): void {
    if (!this.outputOpen) {
      done();
      return;
    }
    if (this.unflushed === 0) done();
    else this.onFlushed = done;
  }
}
