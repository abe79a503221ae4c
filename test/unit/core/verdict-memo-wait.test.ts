import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/logger.js';
import { createMetrics } from '../../../src/core/metrics.js';
import type { Finding } from '../../../src/core/outcome.js';
import type { InflightStore, VerdictKey } from '../../../src/core/ports.js';
import { VerdictMemo, WAIT_RECHECK_MS } from '../../../src/core/verdict-memo.js';
import { MemoryInflightStore, MemoryVerdictStore } from '../../support/memo-harness.js';

const key: VerdictKey = { scanner: 'remote', fingerprint: 'fp', contentKey: 'c'.repeat(64) };

/** The in-memory leases (woken by release, like PostgreSQL's NOTIFY), recording every wait. */
class RecordingInflight extends MemoryInflightStore implements InflightStore {
  readonly waits: number[] = [];
  override waitForRelease(
    k: VerdictKey,
    options: { maxWaitMs: number; signal?: AbortSignal },
  ): Promise<void> {
    this.waits.push(options.maxWaitMs);
    return super.waitForRelease(k, options);
  }
}

async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  const giveUp = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > giveUp) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

function memo(owner: string, verdicts: MemoryVerdictStore, inflight: InflightStore): VerdictMemo {
  return new VerdictMemo({
    verdicts,
    inflight,
    ttl: { clean: 60_000, suspicious: 60_000, malicious: 60_000 },
    owner,
    metrics: createMetrics({ defaultMetrics: false }),
    log: silentLogger,
    leaseMs: 60_000,
  });
}

describe('VerdictMemo waiting for another process (InflightStore.waitForRelease)', () => {
  it('a waiter is woken by the holder releasing, re-checks, and takes the verdict from the cache', async () => {
    const verdicts = new MemoryVerdictStore();
    const inflight = new RecordingInflight();
    // Two processes: separate memos (no shared promise), shared state.
    const holder = memo('p1', verdicts, inflight);
    const waiter = memo('p2', verdicts, inflight);
    let finish!: (f: Finding) => void;
    let computed = 0;
    const request = (m: VerdictMemo) =>
      m.run({
        key,
        deadline: Date.now() + 30_000,
        backgroundMs: 0,
        compute: () => {
          computed++;
          return new Promise<Finding>((resolve) => (finish = resolve));
        },
      });
    const first = request(holder);
    await until(() => inflight.isHeld(key, Date.now()));
    const second = request(waiter);
    await until(() => inflight.waits.length > 0);
    const finishedAt = Date.now();
    finish({ kind: 'malicious', threats: ['X'] });
    expect((await first).source).toBe('scan');
    const joined = await second;
    // Woken at the release, not after a fallback wait.
    expect(Date.now() - finishedAt).toBeLessThan(1000);
    expect(joined).toMatchObject({ source: 'joined', finding: { kind: 'malicious' } });
    expect(computed).toBe(1);
    // Every wait is bounded: the waiter re-checks at least every 5 s even when a wake-up is lost.
    expect(WAIT_RECHECK_MS).toBeLessThanOrEqual(5000);
    expect(Math.max(...inflight.waits)).toBeLessThanOrEqual(WAIT_RECHECK_MS);
  });
});

describe('VerdictMemo taking the lease just after another process released it', () => {
  it('re-reads the cache once it holds the lease: the verdict stored meanwhile is used, no second scan', async () => {
    const verdicts = new MemoryVerdictStore();
    const shared = new MemoryInflightStore();
    let computed = 0;
    const compute = (): Promise<Finding> => {
      computed++;
      return Promise.resolve({ kind: 'malicious', threats: ['X'] });
    };
    const holder = memo('p1', verdicts, shared);
    // The other process scans, stores its verdict and releases its lease between this process's
    // cache read (a miss) and its tryAcquire (which then succeeds): a slow database makes that
    // window wide enough to hit with many messages.
    let between: (() => Promise<unknown>) | undefined = () =>
      holder.run({ key, deadline: Date.now() + 30_000, backgroundMs: 0, compute });
    const late: InflightStore = {
      tryAcquire: async (k, owner, now, until) => {
        const b = between;
        between = undefined;
        if (b !== undefined) await b();
        return shared.tryAcquire(k, owner, Date.now(), until);
      },
      refresh: (k, owner, until) => shared.refresh(k, owner, until),
      release: (k, owner) => shared.release(k, owner),
      isHeld: (k, now) => shared.isHeld(k, now),
      waitForRelease: (k, options) => shared.waitForRelease(k, options),
    };
    const waiter = memo('p2', verdicts, late);
    const result = await waiter.run({ key, deadline: Date.now() + 30_000, backgroundMs: 0, compute });
    expect(result).toMatchObject({ source: 'joined', finding: { kind: 'malicious', threats: ['X'] } });
    expect(computed).toBe(1);
    // The lease it took only to find the verdict is given back.
    expect(await shared.isHeld(key, Date.now())).toBe(false);
  });
});
