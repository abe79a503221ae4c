/** A counting semaphore with a FIFO wait queue: bursts wait in order instead of flooding a peer. */
export class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  get pending(): number {
    return this.waiters.length;
  }

  get inUse(): number {
    return this.active;
  }

  /** The release function of a slot taken at once, or undefined when every slot is in use (or some are waited for). */
  tryAcquire(): (() => void) | undefined {
    if (this.active >= this.limit || this.waiters.length > 0) return undefined;
    this.active++;
    return this.releaser();
  }

  /** Resolves with a release function once a slot is free; rejects if the signal aborts while waiting. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        this.active++;
        resolve(this.releaser());
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(grant);
        if (i !== -1) this.waiters.splice(i, 1);
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(grant);
    });
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.active--;
      this.waiters.shift()?.();
    };
  }
}

/** CPU slots for a scanner (ScanContext.cpu) taken from `slots`; waiting for one stops when `signal` aborts. */
export function cpuSlotsOf(
  slots: Semaphore,
  signal: AbortSignal,
): { run<T>(fn: () => Promise<T>): Promise<T>; acquire(): Promise<() => void> } {
  const acquire = (): Promise<() => void> => Promise.resolve(slots.tryAcquire() ?? slots.acquire(signal));
  return {
    acquire,
    async run<T>(fn: () => Promise<T>): Promise<T> {
      const release = await acquire();
      try {
        return await fn();
      } finally {
        release();
      }
    },
  };
}
