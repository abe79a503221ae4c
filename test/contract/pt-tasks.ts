/** Contract of the PT Sandbox tasks and load rows (PtTaskStore, PtLoadStore). */
import { describe, expect, it } from 'vitest';
import type { PtProcessLoad } from '../../src/core/state-records.js';
import type { StateBackend } from './backend.js';

const claim = (owner: string, now: number, mode = 'analysis', tokenFingerprint = 'tok-a') => ({
  mode,
  owner,
  now,
  maxTaskAgeMs: 1000,
  claimTimeoutMs: 100,
  tokenFingerprint,
  leaseUntil: now + 50,
});

export function ptTasksContract(backend: StateBackend): void {
  describe(`PtTaskStore (${backend.name})`, () => {
    it('one claim per content and fingerprint; others see the task', async () => {
      const opened = await backend.open();
      const s = opened.state.ptTasks;
      expect(await s.claim('k', 'f', claim('a', 0))).toEqual({ claimed: true });
      expect(await s.claim('k', 'f', claim('b', 10))).toMatchObject({
        claimed: false,
        task: { owner: 'a', scanId: undefined },
      });
      expect(await s.claim('k', 'other-fp', claim('b', 10))).toEqual({ claimed: true });
      await s.setScanId('k', 'f', 'a', 'scan-1', 20);
      const other = await opened.another();
      expect(await other.ptTasks.get('k', 'f')).toMatchObject({ scanId: 'scan-1', submittedAt: 20 });
      await s.touch('k', 'f', 30);
      expect((await s.get('k', 'f'))?.lastPolledAt).toBe(30);
    });

    it('a stale claim or task is taken over; a different mode too', async () => {
      const { state } = await backend.open();
      const s = state.ptTasks;
      await s.claim('k', 'f', claim('a', 0));
      expect(await s.claim('k', 'f', claim('b', 101))).toEqual({ claimed: true });
      await s.setScanId('k', 'f', 'b', 'scan-2', 101);
      expect((await s.claim('k', 'f', claim('c', 900))).claimed).toBe(false);
      expect(await s.claim('k', 'f', claim('c', 1200))).toEqual({ claimed: true });
      expect(await s.claim('k', 'f', claim('d', 1201, 'source'))).toEqual({ claimed: true });
    });

    it('only the owner of a claim sets its scan_id', async () => {
      const { state } = await backend.open();
      const s = state.ptTasks;
      await s.claim('k', 'f', claim('a', 0));
      await s.setScanId('k', 'f', 'b', 'scan-b', 5);
      expect(await s.get('k', 'f')).toMatchObject({ owner: 'a', scanId: undefined, submittedAt: 0 });
    });

    it('of processes claiming at once on two connections, exactly one submits', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? opened.state : other).ptTasks.claim('k', 'f', claim(`p${i}`, 0)),
        ),
      );
      expect(results.filter((r) => r.claimed)).toHaveLength(1);
    });

    it('remove only deletes the given scan; release only an unsubmitted claim', async () => {
      const { state } = await backend.open();
      const s = state.ptTasks;
      await s.claim('k', 'f', claim('a', 0));
      await s.setScanId('k', 'f', 'a', 'scan-1', 0);
      await s.remove('k', 'f', 'scan-other');
      await s.release('k', 'f', 'a');
      expect(await s.count()).toBe(1);
      await s.remove('k', 'f', 'scan-1');
      expect(await s.count()).toBe(0);
      await s.claim('k', 'f', claim('a', 0));
      await s.release('k', 'f', 'a');
      expect(await s.count()).toBe(0);
      await s.claim('k', 'f', claim('a', 0));
      expect(await s.purge(1)).toBe(1);
    });

    it('finish forgets the task and records it in the history once, however many processes finish it', async () => {
      const opened = await backend.open();
      const s = opened.state.ptTasks;
      const other = await opened.another();
      await s.claim('k', 'f', claim('a', 0));
      await s.setScanId('k', 'f', 'a', 'scan-1', 1000);
      await s.finish('k', 'f', 'scan-1', 3500, 'verdict');
      await s.finish('k', 'f', 'scan-1', 3600, 'verdict');
      await other.ptTasks.finish('k', 'f', 'scan-1', 3700, 'verdict');
      expect(await s.count()).toBe(0);
      const load = opened.state.ptLoad;
      const snap = await load.snapshot(4000, { rateWindowMs: 60_000 });
      expect(snap.finishedAges).toEqual([2500]);
      expect(snap).toMatchObject({ finishedRecent: 1, submittedRecent: 1, tasksInFlight: 0, claims: 0 });
      // A task that timed out is history, but not a task age.
      await s.claim('k2', 'f', claim('a', 0));
      await s.setScanId('k2', 'f', 'a', 'scan-2', 1000);
      await s.finish('k2', 'f', 'scan-2', 3000, 'timeout');
      expect((await load.snapshot(4000)).finishedAges).toEqual([2500]);
      expect((await load.snapshot(4000)).finishedRecent).toBe(2);
    });
  });

  describe(`PtTaskStore adoption and token binding (${backend.name})`, () => {
    it('a task is adopted only once its owner lease ran out, by exactly one of several processes', async () => {
      const opened = await backend.open();
      const s = opened.state.ptTasks;
      const other = await opened.another();
      await s.claim('k', 'f', claim('a', 0));
      await s.setScanId('k', 'f', 'a', 'scan-1', 10);
      expect(await s.get('k', 'f')).toMatchObject({ owner: 'a', leaseUntil: 50, tokenFingerprint: 'tok-a' });
      // The owner's lease is still running: nobody adopts.
      expect(await other.ptTasks.adopt('k', 'f', 'scan-1', 'b', 40, 140)).toBe(false);
      // The owner renews (its heartbeat): still nobody.
      expect(await s.renew('a', 100)).toBe(1);
      expect(await other.ptTasks.adopt('k', 'f', 'scan-1', 'b', 90, 190)).toBe(false);
      // Renewing does not touch other owners' tasks.
      expect(await other.ptTasks.renew('b', 10_000)).toBe(0);
      // The owner died: its lease runs out; of processes adopting at once, one wins.
      const tries = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? s : other.ptTasks).adopt('k', 'f', 'scan-1', `p${i}`, 100, 200),
        ),
      );
      expect(tries.filter(Boolean)).toHaveLength(1);
      const winner = `p${tries.indexOf(true)}`;
      expect(await other.ptTasks.get('k', 'f')).toMatchObject({
        owner: winner,
        leaseUntil: 200,
        scanId: 'scan-1',
        submittedAt: 10,
      });
      // The adopter keeps it (adopting again extends its lease); a wrong scan_id is not adopted.
      expect(await s.adopt('k', 'f', 'scan-1', winner, 150, 250)).toBe(true);
      expect(await s.adopt('k', 'f', 'scan-1', 'late', 150, 250)).toBe(false);
      expect(await s.adopt('k', 'f', 'scan-other', 'late', 300, 400)).toBe(false);
      expect(await s.renew(winner, 500)).toBe(1);
      expect((await s.get('k', 'f'))?.leaseUntil).toBe(500);
      // The owner gives its lease up (it stops polling): adoptable at once.
      expect(await s.adopt('k', 'f', 'scan-1', winner, 450, 450)).toBe(true);
      expect(await other.ptTasks.adopt('k', 'f', 'scan-1', 'next', 450, 550)).toBe(true);
      expect((await s.get('k', 'f'))?.owner).toBe('next');
      // Gone: nothing to adopt.
      await s.finish('k', 'f', 'scan-1', 600, 'verdict');
      expect(await s.adopt('k', 'f', 'scan-1', 'late', 700, 800)).toBe(false);
    });

    it('a task of another token fingerprint is taken over by a claim; fingerprints are listed', async () => {
      const opened = await backend.open();
      const s = opened.state.ptTasks;
      await s.claim('k', 'f', claim('a', 0, 'analysis', 'tok-a'));
      await s.setScanId('k', 'f', 'a', 'scan-1', 0);
      await s.claim('k2', 'f', claim('a', 0, 'analysis', 'tok-a'));
      await s.setScanId('k2', 'f', 'a', 'scan-2', 5);
      await s.claim('k3', 'f', claim('a', 0, 'analysis', 'tok-a'));
      // Same token: the task in flight is returned.
      expect(await s.claim('k', 'f', claim('b', 10, 'analysis', 'tok-a'))).toMatchObject({ claimed: false });
      expect(await s.tokenFingerprints(0)).toEqual([{ tokenFingerprint: 'tok-a', tasks: 2 }]);
      // Another token cannot read the task: it is stale for that claimer.
      expect(await s.claim('k', 'f', claim('b', 10, 'analysis', 'tok-b'))).toEqual({ claimed: true });
      expect(await s.get('k', 'f')).toMatchObject({
        owner: 'b',
        scanId: undefined,
        tokenFingerprint: 'tok-b',
      });
      await s.setScanId('k', 'f', 'b', 'scan-3', 20);
      expect(await s.tokenFingerprints(0)).toEqual([
        { tokenFingerprint: 'tok-a', tasks: 1 },
        { tokenFingerprint: 'tok-b', tasks: 1 },
      ]);
      // Only tasks submitted since the given time (older ones are past maxTaskAge).
      expect(await s.tokenFingerprints(10)).toEqual([{ tokenFingerprint: 'tok-b', tasks: 1 }]);
      // Another connection sees the same.
      const other = await opened.another();
      expect(await other.ptTasks.tokenFingerprints(10)).toEqual([{ tokenFingerprint: 'tok-b', tasks: 1 }]);
      // Only tasks whose owner's lease runs past the time given (a running process polls them).
      // The claims' leases ran until 50 (tok-a) and 60 (tok-b).
      expect(await s.tokenFingerprints(0, 55)).toEqual([{ tokenFingerprint: 'tok-b', tasks: 1 }]);
      expect(await s.tokenFingerprints(0, 60)).toEqual([]);
      await s.renew('a', 100);
      expect(await s.tokenFingerprints(0, 60)).toEqual([{ tokenFingerprint: 'tok-a', tasks: 1 }]);
    });
  });

  describe(`PtLoadStore (${backend.name})`, () => {
    it('keeps one row per process; the snapshot leaves out processes that stopped reporting', async () => {
      const opened = await backend.open();
      const load = opened.state.ptLoad;
      const row: PtProcessLoad = {
        owner: 'h:1',
        frontEnd: 'helper',
        inflight: 3,
        waiting: 5,
        windowLimit: 8.5,
        windowMax: 64,
        submittedTotal: 10,
        refusedTotal: 1,
        startedAt: 0,
        updatedAt: 1000,
      };
      await load.report(row);
      await load.report({ ...row, waiting: 6, updatedAt: 2000 });
      await load.report({ ...row, owner: 'r:2', frontEnd: 'relay', updatedAt: 500 });
      const snap = await load.snapshot(31_000);
      expect(snap.processes.map((p) => [p.owner, p.waiting])).toEqual([['h:1', 6]]);
      expect(snap.processes[0]).toEqual({ ...row, waiting: 6, updatedAt: 2000 });
      // Another process's watch sees the same.
      const other = await opened.another();
      expect((await other.ptLoad.snapshot(31_000)).processes.map((p) => p.owner)).toEqual(['h:1']);
      await load.remove('h:1');
      expect((await load.snapshot(31_000)).processes).toEqual([]);
      // pt_task in flight: with and without a scan_id, the oldest age.
      const tasks = opened.state.ptTasks;
      await tasks.claim('a', 'f', claim('x', 0));
      await tasks.setScanId('a', 'f', 'x', 'scan-a', 20_000);
      await tasks.claim('b', 'f', claim('x', 25_000));
      expect(await load.snapshot(31_000)).toMatchObject({
        tasksInFlight: 1,
        claims: 1,
        oldestInFlightMs: 11_000,
      });
    });
  });
}
