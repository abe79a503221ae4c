/**
 * Searches a byte stream for fixed patterns with Buffer.indexOf, carrying the last
 * (longest pattern - 1) bytes over so a match split across two chunks is still found.
 * No per-byte JavaScript loop: each chunk is searched natively, the seam separately.
 */
export class StreamSearch {
  private readonly overlap: number;
  private carry: Buffer = Buffer.alloc(0);
  private readonly found = new Set<number>();

  constructor(private readonly patterns: readonly Buffer[]) {
    this.overlap = Math.max(0, ...patterns.map((p) => p.length - 1));
  }

  /** Indexes (into the constructor's list) of the patterns seen so far. */
  get matches(): ReadonlySet<number> {
    return this.found;
  }

  get done(): boolean {
    return this.found.size === this.patterns.length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.done) return;
    const seam =
      this.carry.length > 0 ? Buffer.concat([this.carry, chunk.subarray(0, this.overlap)]) : undefined;
    for (let i = 0; i < this.patterns.length; i++) {
      if (this.found.has(i)) continue;
      const p = this.patterns[i] as Buffer;
      if ((seam !== undefined && seam.indexOf(p) >= 0) || chunk.indexOf(p) >= 0) this.found.add(i);
    }
    if (this.overlap === 0) return;
    if (chunk.length >= this.overlap) {
      this.carry = Buffer.from(chunk.subarray(chunk.length - this.overlap));
    } else {
      const joined = Buffer.concat([this.carry, chunk]);
      this.carry = Buffer.from(joined.subarray(Math.max(0, joined.length - this.overlap)));
    }
  }

  /** Feeds a part's bytes through the search, stopping once every pattern is found. */
  async consume(
    part: { scan(visit: (chunk: Buffer) => void | 'stop', signal?: AbortSignal): Promise<void> },
    signal?: AbortSignal,
  ): Promise<void> {
    await part.scan((chunk) => {
      this.push(chunk);
      return this.done ? 'stop' : undefined;
    }, signal);
  }
}
