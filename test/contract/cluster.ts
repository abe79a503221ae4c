/** Contract of what the processes sharing a state agree on (ClusterStore): secret fingerprints, job leases. */
import { describe, expect, it } from 'vitest';
import type { StateBackend } from './backend.js';

export function clusterContract(backend: StateBackend): void {
  describe(`ClusterStore (${backend.name})`, () => {
    it('the first fingerprint stored under a name stays; every connection sees it', async () => {
      const opened = await backend.open();
      const c = opened.state.cluster;
      expect(await c.getFingerprint('mark-key')).toBeUndefined();
      expect(await c.claimFingerprint('mark-key', 'aaaa', 1)).toBe('aaaa');
      expect(await c.claimFingerprint('mark-key', 'aaaa', 2)).toBe('aaaa');
      const other = await opened.another();
      // Another node with another key is told the stored one, which stays.
      expect(await other.cluster.claimFingerprint('mark-key', 'bbbb', 3)).toBe('aaaa');
      expect(await other.cluster.getFingerprint('mark-key')).toBe('aaaa');
      // Names are independent.
      expect(await other.cluster.claimFingerprint('pt-sandbox-token', 'cccc', 3)).toBe('cccc');
      // An operator's rotation replaces it.
      await other.cluster.setFingerprint('mark-key', 'bbbb', 4);
      expect(await c.getFingerprint('mark-key')).toBe('bbbb');
      expect(await c.claimFingerprint('mark-key', 'aaaa', 5)).toBe('bbbb');
    });

    it('of processes claiming a fingerprint at once, all agree on one', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const stored = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? opened.state : other).cluster.claimFingerprint('mark-key', `fp-${i}`, i),
        ),
      );
      expect(new Set(stored).size).toBe(1);
      expect(await opened.state.cluster.getFingerprint('mark-key')).toBe(stored[0]);
    });

    it('one holder of a job lease at a time, until it runs out or is given up', async () => {
      const opened = await backend.open();
      const a = opened.state.cluster;
      const b = (await opened.another()).cluster;
      expect(await a.tryJobLease('retention', 'a', 0, 100)).toBe(true);
      expect(await b.tryJobLease('retention', 'b', 50, 150)).toBe(false);
      // Other jobs are independent; the holder may extend its own lease.
      expect(await b.tryJobLease('other-job', 'b', 50, 150)).toBe(true);
      expect(await a.tryJobLease('retention', 'a', 60, 120)).toBe(true);
      expect(await b.tryJobLease('retention', 'b', 110, 210)).toBe(false);
      // Run out: another takes it.
      expect(await b.tryJobLease('retention', 'b', 120, 220)).toBe(true);
      // Only the holder gives it up.
      await a.releaseJobLease('retention', 'a');
      expect(await a.tryJobLease('retention', 'a', 130, 230)).toBe(false);
      await b.releaseJobLease('retention', 'b');
      expect(await a.tryJobLease('retention', 'a', 130, 230)).toBe(true);
    });

    it('of processes taking a job lease at once on two connections, exactly one gets it', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const tries = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? opened.state : other).cluster.tryJobLease('retention', `p${i}`, 1000, 2000),
        ),
      );
      expect(tries.filter(Boolean)).toHaveLength(1);
    });
  });
}
