import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStateDb, schemaVersion, type StateDb } from '../../../src/store/db.js';
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
});
