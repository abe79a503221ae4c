import type { Readable } from 'node:stream';

/** How a returned body relates to the content sent: the same bytes, a beginning of them, or something else. */
export type Comparison = 'identical' | 'prefix' | 'differs';

/** Body bytes queued for comparison above which the caller should pause its socket. */
const HIGH_WATER = 1024 * 1024;

/**
 * Compares a body arriving in pieces with the content we sent, by reading the content again from
 * its own stream (never holding either in memory): an echo is clean only when every byte matches
 * and the lengths agree. push() returns false when the caller should pause its input until
 * onDrain() fires.
 */
export class BodyComparator {
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private received = 0;
  private same = true;
  private source: Readable | undefined;
  private iterator: AsyncIterator<unknown> | undefined;
  private pending: Buffer = Buffer.alloc(0);
  private sourceDone = false;
  private running: Promise<void> | undefined;
  private drainWaiters: Array<() => void> = [];
  private error: Error | undefined;

  constructor(
    private readonly open: () => Readable,
    private readonly size: number,
  ) {}

  /** Queues bytes of the returned body. false: stop reading until onDrain. */
  push(data: Buffer): boolean {
    this.received += data.length;
    if (!this.same) return true;
    if (this.received > this.size) {
      // Longer than what we sent: cannot be the same bytes.
      this.markDiffers();
      return true;
    }
    this.queue.push(data);
    this.queued += data.length;
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
    return this.queued < HIGH_WATER;
  }

  onDrain(fn: () => void): void {
    if (this.queued < HIGH_WATER) fn();
    else this.drainWaiters.push(fn);
  }

  /** The verdict once the body has ended. Throws when the content could not be read again. */
  async result(): Promise<Comparison> {
    while (this.running !== undefined) await this.running;
    if (this.error !== undefined) throw this.error;
    if (!this.same) return 'differs';
    return this.received === this.size ? 'identical' : 'prefix';
  }

  get bytes(): number {
    return this.received;
  }

  destroy(): void {
    this.source?.destroy();
    this.source = undefined;
    this.queue.length = 0;
    this.queued = 0;
    this.wakeDrain();
  }

  private markDiffers(): void {
    this.same = false;
    this.queue.length = 0;
    this.queued = 0;
    this.source?.destroy();
    this.wakeDrain();
  }

  private wakeDrain(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  private async run(): Promise<void> {
    try {
      while (this.same && this.queue.length > 0) {
        const chunk = this.queue.shift() as Buffer;
        this.queued -= chunk.length;
        if (this.queued < HIGH_WATER) this.wakeDrain();
        let off = 0;
        while (this.same && off < chunk.length) {
          const want = chunk.length - off;
          const have = await this.take(want);
          if (have.length === 0 || !have.equals(chunk.subarray(off, off + have.length))) {
            this.markDiffers();
            return;
          }
          off += have.length;
        }
      }
    } catch (err) {
      this.error = err instanceof Error ? err : new Error(String(err));
      this.markDiffers();
    }
  }

  /** Up to `max` next bytes of the content; empty at its end. */
  private async take(max: number): Promise<Buffer> {
    while (this.pending.length === 0 && !this.sourceDone) {
      if (this.iterator === undefined) {
        this.source = this.open();
        this.iterator = (this.source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      }
      const r = await this.iterator.next();
      if (r.done === true) this.sourceDone = true;
      else this.pending = toBuffer(r.value);
    }
    const n = Math.min(max, this.pending.length);
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk));
}
