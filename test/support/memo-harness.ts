/**
 * Drives a scanner the way the scan service does (src/core/run-scanner.ts): the message goes
 * through a VerdictMemo (cache + single-flight + deadline race, background until the scanner's
 * backgroundMs), and ctx.memo routes sub-parts through the same memo under `part:<key>`. The
 * stores are in memory; a test shares one harness to share the cache.
 */
import { createMetrics } from '../../src/core/metrics.js';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import type { MessageSource } from '../../src/core/message.js';
import type { CachedVerdict, InflightStore, VerdictKey, VerdictStore } from '../../src/core/ports.js';
import type { ScanContext, Scanner } from '../../src/core/scanner.js';
import { scanThroughMemo } from '../../src/core/run-scanner.js';
import { VerdictMemo, type MemoResult } from '../../src/core/verdict-memo.js';

const id = (k: VerdictKey) => `${k.scanner}\0${k.fingerprint}\0${k.contentKey}`;

export class MemoryVerdictStore implements VerdictStore {
  readonly rows = new Map<string, { verdict: CachedVerdict; expiresAt: number }>();
  get(key: VerdictKey, now: number): Promise<CachedVerdict | undefined> {
    const row = this.rows.get(id(key));
    return Promise.resolve(row !== undefined && row.expiresAt > now ? row.verdict : undefined);
  }
  put(key: VerdictKey, verdict: CachedVerdict, _now: number, expiresAt: number): Promise<void> {
    this.rows.set(id(key), { verdict, expiresAt });
    return Promise.resolve();
  }
  prune(now: number): Promise<number> {
    let n = 0;
    for (const [k, row] of this.rows) if (row.expiresAt <= now && this.rows.delete(k)) n++;
    return Promise.resolve(n);
  }
}

export class MemoryInflightStore implements InflightStore {
  private readonly rows = new Map<string, { owner: string; until: number }>();
  tryAcquire(key: VerdictKey, owner: string, now: number, leaseUntil: number): Promise<boolean> {
    const row = this.rows.get(id(key));
    if (row !== undefined && row.until > now && row.owner !== owner) return Promise.resolve(false);
    this.rows.set(id(key), { owner, until: leaseUntil });
    return Promise.resolve(true);
  }
  refresh(key: VerdictKey, owner: string, leaseUntil: number): Promise<void> {
    const row = this.rows.get(id(key));
    if (row?.owner === owner) row.until = leaseUntil;
    return Promise.resolve();
  }
  release(key: VerdictKey, owner: string): Promise<void> {
    if (this.rows.get(id(key))?.owner === owner) {
      this.rows.delete(id(key));
      // Like a notifying backend (PostgreSQL's NOTIFY): wakes the waiters at once.
      for (const wake of this.waiters.get(id(key)) ?? []) wake();
    }
    return Promise.resolve();
  }
  isHeld(key: VerdictKey, now: number): Promise<boolean> {
    const row = this.rows.get(id(key));
    return Promise.resolve(row !== undefined && row.until > now);
  }
  private readonly waiters = new Map<string, Set<() => void>>();
  /** Woken by release(); a lease that runs out wakes nobody (maxWaitMs bounds the wait). */
  waitForRelease(key: VerdictKey, options: { maxWaitMs: number; signal?: AbortSignal }): Promise<void> {
    const k = id(key);
    const row = this.rows.get(k);
    if (row === undefined || row.until <= Date.now() || options.signal?.aborted === true)
      return Promise.resolve();
    return new Promise((resolve) => {
      const set = this.waiters.get(k) ?? new Set<() => void>();
      this.waiters.set(k, set);
      const done = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', done);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(k);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, options.maxWaitMs));
      options.signal?.addEventListener('abort', done, { once: true });
      set.add(done);
    });
  }
}

export class MemoHarness {
  readonly verdicts = new MemoryVerdictStore();
  readonly memo: VerdictMemo;
  private readonly shutdownController = new AbortController();

  constructor(private readonly log: Logger = silentLogger) {
    this.memo = new VerdictMemo({
      verdicts: this.verdicts,
      inflight: new MemoryInflightStore(),
      ttl: { clean: 3_600_000, suspicious: 3_600_000, malicious: 3_600_000 },
      owner: 'test',
      metrics: createMetrics({ defaultMetrics: false }),
      log,
      shutdown: this.shutdownController.signal,
    });
  }

  /** One scan with a content key the test chooses (the scan service uses analyseMessage's key). */
  async scan(
    scanner: Scanner,
    message: MessageSource,
    contentKey: string,
    deadline: number,
  ): Promise<MemoResult> {
    const fingerprint = await scanner.fingerprint(AbortSignal.timeout(5000));
    return scanThroughMemo(this.memo, scanner, message, {
      fingerprint,
      contentKey,
      deadline,
      log: this.log,
      now: Date.now,
    });
  }

  /** Waits for background scans to settle. */
  settle(): Promise<void> {
    return this.memo.settle();
  }

  /** Stops background scans. */
  shutdown(): void {
    this.shutdownController.abort();
  }
}

/** A ScanContext for driving a scanner directly (no cache): the memo just computes. */
export function directContext(options: {
  deadline: number;
  signal?: AbortSignal;
  log?: Logger;
}): ScanContext {
  return {
    signal: options.signal ?? AbortSignal.timeout(Math.max(1, options.deadline - Date.now())),
    deadline: options.deadline,
    log: options.log ?? silentLogger,
    now: Date.now,
    memo: { run: (_key, compute) => compute() },
  };
}
