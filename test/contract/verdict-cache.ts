/** Contract of the verdict cache and the in-flight leases (VerdictStore, InflightStore). */
import { describe, expect, it } from 'vitest';
import type { CachedVerdict, VerdictKey } from '../../src/core/ports.js';
import type { StateBackend } from './backend.js';

const key = (contentKey = 'c'.repeat(64), fingerprint = 'fp1', scanner = 'pt-sandbox'): VerdictKey => ({
  scanner,
  fingerprint,
  contentKey,
});

const clean: CachedVerdict = { finding: { kind: 'clean' }, version: '5.11.0' };
const malicious: CachedVerdict = {
  finding: { kind: 'malicious', threats: ['Eicar-Test-Signature'], details: { scanId: 's-1' } },
  version: '5.12.0',
};

export function verdictCacheContract(backend: StateBackend): void {
  describe(`VerdictStore (${backend.name})`, () => {
    it('reads a verdict back with its version until it expires; without a version, none', async () => {
      const { state } = await backend.open();
      const v = state.verdicts;
      await v.put(key(), clean, 1000, 5000);
      expect(await v.get(key(), 1000)).toEqual(clean);
      expect(await v.get(key(), 4999)).toEqual(clean);
      expect(await v.get(key(), 5000)).toBeUndefined();
      await v.put(key('d'.repeat(64)), { finding: { kind: 'suspicious', threats: ['X'] } }, 1000, 5000);
      expect(await v.get(key('d'.repeat(64)), 1000)).toEqual({
        finding: { kind: 'suspicious', threats: ['X'] },
      });
    });

    it('never stores a failure or a skip', async () => {
      const { state } = await backend.open();
      const v = state.verdicts;
      await v.put(key(), { finding: { kind: 'failed', reason: 'timeout', message: 'late' } }, 0, 10_000);
      await v.put(key('e'.repeat(64)), { finding: { kind: 'skipped', reason: 'bypass' } }, 0, 10_000);
      expect(await v.get(key(), 1)).toBeUndefined();
      expect(await v.get(key('e'.repeat(64)), 1)).toBeUndefined();
    });

    it('keys by scanner, fingerprint and content key; a second put replaces the first', async () => {
      const { state } = await backend.open();
      const v = state.verdicts;
      await v.put(key(), clean, 0, 10_000);
      expect(await v.get(key(undefined, 'fp2'), 1)).toBeUndefined();
      expect(await v.get(key(undefined, undefined, 'clamd'), 1)).toBeUndefined();
      expect(await v.get(key('f'.repeat(64)), 1)).toBeUndefined();
      await v.put(key(), malicious, 2, 20_000);
      expect(await v.get(key(), 15_000)).toEqual(malicious);
    });

    it('another connection reads what a resolved put wrote; prune removes expired rows only', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      await opened.state.verdicts.put(key('1'.repeat(64)), clean, 0, 100);
      await opened.state.verdicts.put(key('2'.repeat(64)), clean, 0, 200);
      expect(await other.verdicts.get(key('1'.repeat(64)), 50)).toEqual(clean);
      expect(await other.verdicts.prune(150)).toBe(1);
      expect(await opened.state.verdicts.get(key('2'.repeat(64)), 150)).toEqual(clean);
      expect(await opened.state.verdicts.prune(150)).toBe(0);
    });
  });

  describe(`InflightStore (${backend.name})`, () => {
    it('one owner holds the lease until it runs out; then another takes it over', async () => {
      const { state } = await backend.open();
      const l = state.inflight;
      expect(await l.isHeld(key(), 0)).toBe(false);
      expect(await l.tryAcquire(key(), 'a', 0, 100)).toBe(true);
      expect(await l.isHeld(key(), 50)).toBe(true);
      expect(await l.tryAcquire(key(), 'b', 50, 150)).toBe(false);
      // Other content is free.
      expect(await l.tryAcquire(key('9'.repeat(64)), 'b', 50, 150)).toBe(true);
      expect(await l.isHeld(key(), 100)).toBe(false);
      expect(await l.tryAcquire(key(), 'b', 100, 200)).toBe(true);
      expect(await l.tryAcquire(key(), 'a', 150, 250)).toBe(false);
    });

    it('only the holder refreshes or releases its lease', async () => {
      const { state } = await backend.open();
      const l = state.inflight;
      await l.tryAcquire(key(), 'a', 0, 100);
      await l.refresh(key(), 'a', 300);
      await l.refresh(key(), 'b', 10_000);
      expect(await l.isHeld(key(), 200)).toBe(true);
      expect(await l.tryAcquire(key(), 'b', 200, 400)).toBe(false);
      expect(await l.isHeld(key(), 300)).toBe(false);
      await l.tryAcquire(key(), 'a', 300, 400);
      await l.release(key(), 'b');
      expect(await l.isHeld(key(), 350)).toBe(true);
      await l.release(key(), 'a');
      expect(await l.isHeld(key(), 350)).toBe(false);
      expect(await l.tryAcquire(key(), 'b', 350, 450)).toBe(true);
    });

    it('of owners racing on two connections, exactly one takes the lease', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const tries = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? opened.state : other).inflight.tryAcquire(key(), `owner-${i}`, 0, 1000),
        ),
      );
      expect(tries.filter(Boolean)).toHaveLength(1);
      expect(await other.inflight.isHeld(key(), 1)).toBe(true);
    });

    it('waitForRelease wakes a waiter on another connection when the holder releases', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const now = Date.now();
      expect(await opened.state.inflight.tryAcquire(key(), 'a', now, now + 60_000)).toBe(true);
      const started = Date.now();
      const woken = other.inflight.waitForRelease(key(), { maxWaitMs: 5000 });
      setTimeout(() => void opened.state.inflight.release(key(), 'a'), 200);
      await woken;
      const waited = Date.now() - started;
      expect(waited).toBeGreaterThanOrEqual(150);
      expect(waited).toBeLessThan(4000);
      expect(await other.inflight.isHeld(key(), Date.now())).toBe(false);
    });

    it('waitForRelease returns when the lease runs out, at maxWaitMs, at once when aborted or free', async () => {
      const opened = await backend.open();
      const l = opened.state.inflight;
      // Free: at once.
      let started = Date.now();
      await l.waitForRelease(key(), { maxWaitMs: 5000 });
      expect(Date.now() - started).toBeLessThan(1000);
      // A lease that runs out (its holder died) wakes the waiter without a release.
      await l.tryAcquire(key(), 'dead', Date.now(), Date.now() + 300);
      started = Date.now();
      await l.waitForRelease(key(), { maxWaitMs: 5000 });
      expect(Date.now() - started).toBeLessThan(4000);
      expect(await l.isHeld(key(), Date.now())).toBe(false);
      // Held throughout: back after maxWaitMs, still held (the caller re-checks and waits again).
      await l.tryAcquire(key(), 'alive', Date.now(), Date.now() + 60_000);
      started = Date.now();
      await l.waitForRelease(key(), { maxWaitMs: 300 });
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(await l.isHeld(key(), Date.now())).toBe(true);
      // Aborted: at once.
      const controller = new AbortController();
      started = Date.now();
      const aborted = l.waitForRelease(key(), { maxWaitMs: 5000, signal: controller.signal });
      controller.abort();
      await aborted;
      expect(Date.now() - started).toBeLessThan(1000);
      expect(await l.isHeld(key(), Date.now())).toBe(true);
    });
  });
}
