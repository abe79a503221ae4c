import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStateDb, schemaVersion, type StateDb } from '../../../src/store/db.js';
import { PtLoadStore } from '../../../src/store/pt-load.js';
import { PtTaskStore } from '../../../src/store/pt-tasks.js';

let dir: string;
let db: StateDb;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-ptt-'));
  db = openStateDb(dir);
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

const claim = (owner: string, now: number, mode = 'analysis') => ({
  mode,
  owner,
  now,
  maxTaskAgeMs: 1000,
  claimTimeoutMs: 100,
});

describe('PtTaskStore (migration 3)', () => {
  it('migration 3 is applied', () => {
    expect(schemaVersion(db)).toBeGreaterThanOrEqual(3);
  });

  it('one claim per content and fingerprint; others see the task', () => {
    const s = new PtTaskStore(db);
    expect(s.claim('k', 'f', claim('a', 0))).toEqual({ claimed: true });
    expect(s.claim('k', 'f', claim('b', 10))).toMatchObject({
      claimed: false,
      task: { owner: 'a', scanId: undefined },
    });
    expect(s.claim('k', 'other-fp', claim('b', 10))).toEqual({ claimed: true });
    s.setScanId('k', 'f', 'a', 'scan-1', 20);
    const other = openStateDb(dir);
    expect(new PtTaskStore(other).get('k', 'f')).toMatchObject({ scanId: 'scan-1', submittedAt: 20 });
    other.close();
    s.touch('k', 'f', 30);
    expect(s.get('k', 'f')?.lastPolledAt).toBe(30);
  });

  it('a stale claim or task is taken over; a different mode too', () => {
    const s = new PtTaskStore(db);
    s.claim('k', 'f', claim('a', 0));
    expect(s.claim('k', 'f', claim('b', 101))).toEqual({ claimed: true });
    s.setScanId('k', 'f', 'b', 'scan-2', 101);
    expect(s.claim('k', 'f', claim('c', 900)).claimed).toBe(false);
    expect(s.claim('k', 'f', claim('c', 1200))).toEqual({ claimed: true });
    expect(s.claim('k', 'f', claim('d', 1201, 'source'))).toEqual({ claimed: true });
  });

  it('remove only deletes the given scan; release only an unsubmitted claim', () => {
    const s = new PtTaskStore(db);
    s.claim('k', 'f', claim('a', 0));
    s.setScanId('k', 'f', 'a', 'scan-1', 0);
    s.remove('k', 'f', 'scan-other');
    s.release('k', 'f', 'a');
    expect(s.count()).toBe(1);
    s.remove('k', 'f', 'scan-1');
    expect(s.count()).toBe(0);
    s.claim('k', 'f', claim('a', 0));
    s.release('k', 'f', 'a');
    expect(s.count()).toBe(0);
    s.claim('k', 'f', claim('a', 0));
    expect(s.purge(1)).toBe(1);
  });

  it('finish forgets the task and records it in the history once, however many processes finish it', () => {
    const s = new PtTaskStore(db);
    s.claim('k', 'f', claim('a', 0));
    s.setScanId('k', 'f', 'a', 'scan-1', 1000);
    s.finish('k', 'f', 'scan-1', 3500, 'verdict');
    s.finish('k', 'f', 'scan-1', 3600, 'verdict');
    expect(s.count()).toBe(0);
    const load = new PtLoadStore(db);
    const snap = load.snapshot(4000, { rateWindowMs: 60_000 });
    expect(snap.finishedAges).toEqual([2500]);
    expect(snap).toMatchObject({ finishedRecent: 1, submittedRecent: 1, tasksInFlight: 0, claims: 0 });
    // A task that timed out is history, but not a task age.
    s.claim('k2', 'f', claim('a', 0));
    s.setScanId('k2', 'f', 'a', 'scan-2', 1000);
    s.finish('k2', 'f', 'scan-2', 3000, 'timeout');
    expect(load.snapshot(4000).finishedAges).toEqual([2500]);
    expect(load.snapshot(4000).finishedRecent).toBe(2);
  });
});

describe('PtLoadStore (migration 7)', () => {
  it('keeps one row per process; the snapshot leaves out processes that stopped reporting', () => {
    const load = new PtLoadStore(db);
    const row = {
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
    load.report(row);
    load.report({ ...row, waiting: 6, updatedAt: 2000 });
    load.report({ ...row, owner: 'r:2', frontEnd: 'relay', updatedAt: 500 });
    const snap = load.snapshot(31_000);
    expect(snap.processes.map((p) => [p.owner, p.waiting])).toEqual([['h:1', 6]]);
    load.remove('h:1');
    expect(load.snapshot(31_000).processes).toEqual([]);
    // pt_task in flight: with and without a scan_id, the oldest age.
    const tasks = new PtTaskStore(db);
    tasks.claim('a', 'f', claim('x', 0));
    tasks.setScanId('a', 'f', 'x', 'scan-a', 20_000);
    tasks.claim('b', 'f', claim('x', 25_000));
    expect(load.snapshot(31_000)).toMatchObject({ tasksInFlight: 1, claims: 1, oldestInFlightMs: 11_000 });
  });
});
