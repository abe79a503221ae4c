import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../../src/core/metrics.js';
import type { Finding } from '../../../src/core/outcome.js';
import type { CachedVerdict, VerdictKey } from '../../../src/core/ports.js';
import { VerdictMemo } from '../../../src/core/verdict-memo.js';
import { MemoryInflightStore, MemoryVerdictStore } from '../../support/memo-harness.js';
import { recorder } from '../../support/recording-logger.js';

const key: VerdictKey = { scanner: 'rules', fingerprint: 'fp', contentKey: 'c'.repeat(64) };

/** The state backend down: every cache and lease call rejects, as a pool that cannot connect does. */
class DownVerdicts extends MemoryVerdictStore {
  override get(): Promise<CachedVerdict | undefined> {
    return Promise.reject(new Error('connect ECONNREFUSED'));
  }
  override put(): Promise<void> {
    return Promise.reject(new Error('connect ECONNREFUSED'));
  }
}
class DownInflight extends MemoryInflightStore {
  override tryAcquire(): Promise<boolean> {
    return Promise.reject(new Error('connect ECONNREFUSED'));
  }
}

describe('VerdictMemo when the state backend fails', () => {
  it('scans without the shared cache and lease, single-flight in the process, counted and logged', async () => {
    const log = recorder();
    const metrics = createMetrics({ defaultMetrics: false });
    const memo = new VerdictMemo({
      verdicts: new DownVerdicts(),
      inflight: new DownInflight(),
      ttl: { clean: 60_000, suspicious: 60_000, malicious: 60_000 },
      owner: 'p1',
      metrics,
      log: log.root,
    });
    let computed = 0;
    let finish!: (f: Finding) => void;
    const request = () =>
      memo.run({
        key,
        deadline: Date.now() + 10_000,
        backgroundMs: 0,
        compute: () => {
          computed++;
          return new Promise<Finding>((resolve) => (finish = resolve));
        },
      });
    const first = request();
    const second = request();
    const giveUp = Date.now() + 5000;
    while (computed === 0 && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 5));
    finish({ kind: 'malicious', threats: ['X'] });
    expect(await first).toMatchObject({ source: 'scan', finding: { kind: 'malicious' } });
    expect(await second).toMatchObject({ source: 'joined', finding: { kind: 'malicious' } });
    expect(computed).toBe(1);
    const counted = (await metrics.stateFallbacks.get()).values;
    expect(counted.find((v) => v.labels.op === 'cache_read')?.value).toBeGreaterThanOrEqual(1);
    expect(counted.find((v) => v.labels.op === 'lease')?.value).toBe(1);
    expect(log.lines.filter((l) => l.event === 'memo.state_fallback').map((l) => l.op)).toEqual(
      expect.arrayContaining(['cache_read', 'lease']),
    );
  });
});
