/**
 * An adaptive in-flight window (AIMD, as TCP's congestion window) for work sent to a remote peer
 * with a capacity we cannot see (PT Sandbox's analysis slots):
 *
 * - at most `limit` pieces of work in flight; more wait in order (FIFO; a retry goes to the front);
 * - slow start: from `start`, +1 per piece finished in good health (doubling per round trip) up to
 *   `max`, until the first congestion signal;
 * - multiplicative decrease on a congestion signal (the peer refused work, or its answers take
 *   longer while this window is the limit): limit x factor, never below `min`. Signals from work started before the last decrease
 *   are ignored (one decrease per round trip, not one per refused request of the same burst);
 * - additive increase after that: +1 per round trip (+1/limit per piece finished in good health),
 *   and only while the window is the limit (something waits, or every slot is in use), so a quiet
 *   period does not open it wide for the next burst.
 */
export interface AdaptiveWindowOptions {
  readonly start: number;
  readonly min: number;
  readonly max: number;
  readonly now?: () => number;
  /** Called after every change of limit, use or queue (metrics, the state database's load row). */
  readonly onChange?: () => void;
}

/** One slot of the window. */
export interface WindowTicket {
  /** When the slot was granted (epoch ms): congestion signals from older work do not decrease the window again. */
  readonly startedAt: number;
  release(): void;
}

interface Waiter {
  readonly grant: () => void;
}

export class AdaptiveWindow {
  private value: number;
  private threshold: number;
  private active = 0;
  private readonly waiters: Waiter[] = [];
  private lastDecreaseAt = Number.NEGATIVE_INFINITY;
  private readonly now: () => number;
  private readonly min: number;
  private readonly max: number;

  constructor(private readonly o: AdaptiveWindowOptions) {
    this.now = o.now ?? Date.now;
    this.min = Math.max(1, Math.floor(o.min));
    this.max = Math.max(this.min, Math.floor(o.max));
    this.value = clamp(o.start, this.min, this.max);
    this.threshold = this.max;
  }

  /** Slots granted now (may be above `capacity` for a while after a decrease). */
  get inUse(): number {
    return this.active;
  }

  /** Callers waiting for a slot. */
  get pending(): number {
    return this.waiters.length;
  }

  /** The window's current size (fractional during additive increase). */
  get limit(): number {
    return this.value;
  }

  /** Slots that may be in use at once now. */
  get capacity(): number {
    return Math.max(this.min, Math.floor(this.value));
  }

  get ceiling(): number {
    return this.max;
  }

  /** Whether the window is what holds work back now: every slot in use, or someone waiting. */
  get limiting(): boolean {
    return this.waiters.length > 0 || this.active >= this.capacity;
  }

  /** A slot at once, or undefined when every slot is in use or others are waiting. */
  tryAcquire(): WindowTicket | undefined {
    return this.waiters.length === 0 && this.active < this.capacity ? this.grant() : undefined;
  }

  /**
   * Resolves with a slot once one is free; rejects with the signal's reason if it aborts first.
   * `front`: wait ahead of the others (work that had a slot and was refused by the peer).
   */
  acquire(signal?: AbortSignal, options: { front?: boolean } = {}): Promise<WindowTicket> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.waiters.length === 0 && this.active < this.capacity) {
      return Promise.resolve(this.grant());
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.grant());
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i !== -1) this.waiters.splice(i, 1);
        this.o.onChange?.();
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (options.front === true) this.waiters.unshift(waiter);
      else this.waiters.push(waiter);
      this.o.onChange?.();
    });
  }

  /** A piece of work finished in good health: grow (slow start, then additive) while the window is the limit. */
  grow(): void {
    if (!this.limiting) return;
    if (this.value < this.threshold) this.value = Math.min(this.max, this.value + 1);
    else this.value = Math.min(this.max, this.value + 1 / this.value);
    this.pump();
    this.o.onChange?.();
  }

  /**
   * A congestion signal from work started at `startedAt`: multiplies the window by `factor` unless
   * the window was already decreased after that work started. Returns whether it decreased.
   */
  shrink(startedAt: number, factor: number): boolean {
    if (startedAt < this.lastDecreaseAt) return false;
    this.lastDecreaseAt = this.now();
    this.value = Math.max(this.min, this.value * factor);
    this.threshold = this.value;
    this.o.onChange?.();
    return true;
  }

  private grant(): WindowTicket {
    this.active++;
    let done = false;
    const ticket: WindowTicket = {
      startedAt: this.now(),
      release: () => {
        if (done) return;
        done = true;
        this.active--;
        this.pump();
        this.o.onChange?.();
      },
    };
    this.o.onChange?.();
    return ticket;
  }

  private pump(): void {
    while (this.waiters.length > 0 && this.active < this.capacity) this.waiters.shift()?.grant();
  }
}

/**
 * Says whether the age of finished work grows: the median of the last `sample` ages against the
 * lowest such median of the last `baselineMs` (the age when nothing queued). Growth means the
 * median is above baseline x `factor` and above baseline + `slackMs` (so jitter of small ages,
 * and ages rounded up to the next poll, do not count).
 */
export class AgeTrend {
  private readonly ages: number[] = [];
  private next = 0;
  /** (time, median) pairs with increasing medians: the front is the window's minimum. */
  private readonly minima: Array<{ at: number; median: number }> = [];
  private readonly now: () => number;

  constructor(
    private readonly o: {
      readonly sample?: number;
      readonly factor?: number;
      readonly slackMs: number;
      readonly baselineMs?: number;
      readonly now?: () => number;
    },
  ) {
    this.now = o.now ?? Date.now;
  }

  /** The baseline (ms) once known. */
  get baseline(): number | undefined {
    return this.minima[0]?.median;
  }

  /** Records one age (ms); true when ages have grown (see the class comment). */
  record(ageMs: number): boolean {
    const sample = this.o.sample ?? 8;
    if (this.ages.length < sample) this.ages.push(ageMs);
    else this.ages[this.next] = ageMs;
    this.next = (this.next + 1) % sample;
    if (this.ages.length < sample) return false;
    const sorted = [...this.ages].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] as number;
    const now = this.now();
    const horizon = now - (this.o.baselineMs ?? 5 * 60_000);
    while (this.minima.length > 0 && (this.minima[0] as { at: number }).at < horizon) this.minima.shift();
    while (this.minima.length > 0 && (this.minima.at(-1) as { median: number }).median >= median)
      this.minima.pop();
    this.minima.push({ at: now, median });
    const baseline = (this.minima[0] as { median: number }).median;
    return median > baseline * (this.o.factor ?? 1.5) && median - baseline > this.o.slackMs;
  }
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
