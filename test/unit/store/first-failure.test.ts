import { describe, expect, it, vi } from 'vitest';
import { openStateDb } from '../../../src/store/db.js';
import { SqliteFirstFailureStore } from '../../../src/store/verdict-store.js';
import { firstFailureContract } from '../../contract/first-failure.js';
import { tempDir } from '../../support/tmp.js';
import { sqliteBackend } from './sqlite-backend.js';

firstFailureContract(sqliteBackend);

const rows = (db: ReturnType<typeof openStateDb>) =>
  (db.prepare('SELECT content_key AS k FROM first_failure ORDER BY k').all() as Array<{ k: string }>).map(
    (r) => r.k,
  );

describe('first failures in SQLite: the batched clears', () => {
  it('writes waiting clears on the timer, on close, and for another key’s failure', async () => {
    vi.useFakeTimers();
    try {
      const db = openStateDb(tempDir());
      const store = new SqliteFirstFailureStore(db, 1000);
      await store.touch('a', 1);
      await store.touch('b', 1);
      await store.touch('c', 1);
      store.clear('a');
      expect(rows(db)).toEqual(['a', 'b', 'c']);
      vi.advanceTimersByTime(1000);
      expect(rows(db)).toEqual(['b', 'c']);
      store.clear('b');
      await store.touch('d', 2);
      expect(rows(db)).toEqual(['c', 'd']);
      store.clear('c');
      store.close();
      expect(rows(db)).toEqual(['d']);
      db.close();
      // A verdict that finishes after close has nowhere to go, and nothing is left trying.
      store.clear('d');
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('reads nothing per clean verdict: the clears of an empty table cost one read per batch', () => {
    vi.useFakeTimers();
    try {
      const db = openStateDb(tempDir());
      const store = new SqliteFirstFailureStore(db, 1000);
      const prepare = vi.spyOn(db, 'prepare');
      const reads = vi.fn();
      // The store's statements are prepared already: count what it asks the database from now on.
      const any = (store as unknown as { anyStmt: { get: () => unknown } }).anyStmt;
      const get = any.get.bind(any);
      any.get = () => {
        reads();
        return get();
      };
      for (let i = 0; i < 500; i++) store.clear(`clean-${i}`);
      expect(reads).not.toHaveBeenCalled();
      vi.advanceTimersByTime(1000);
      expect(reads).toHaveBeenCalledTimes(1);
      expect(prepare).not.toHaveBeenCalled();
      expect(rows(db)).toEqual([]);
      store.close();
      db.close();
    } finally {
      vi.useRealTimers();
    }
  });
});
