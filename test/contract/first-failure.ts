/** Contract of the first-failure times (FirstFailureStore). */
import { describe, expect, it } from 'vitest';
import type { StateBackend } from './backend.js';

export function firstFailureContract(backend: StateBackend): void {
  describe(`FirstFailureStore (${backend.name})`, () => {
    it('keeps the first failure of a key until a clean verdict clears it', async () => {
      const { state } = await backend.open();
      const store = state.firstFailures;
      expect(await store.touch('k1', 1000)).toBe(1000);
      expect(await store.touch('k1', 5000)).toBe(1000);
      store.clear('k1');
      // The clear waits for its batch, but a later failure in this process never overtakes it.
      expect(await store.touch('k1', 9000)).toBe(9000);
    });

    it('keys are independent', async () => {
      const { state } = await backend.open();
      const store = state.firstFailures;
      expect(await store.touch('a', 10)).toBe(10);
      expect(await store.touch('b', 20)).toBe(20);
      store.clear('a');
      expect(await store.touch('b', 30)).toBe(20);
      expect(await store.touch('a', 40)).toBe(40);
    });

    it('another connection sees a failure at once and a clear once it is flushed', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const mine = opened.state.firstFailures;
      expect(await mine.touch('k', 100)).toBe(100);
      expect(await other.firstFailures.touch('k', 200)).toBe(100);
      mine.clear('k');
      await mine.flush();
      expect(await other.firstFailures.touch('k', 300)).toBe(300);
    });

    it('a failure of another key writes the clears waiting before it', async () => {
      const opened = await backend.open();
      const other = await opened.another();
      const mine = opened.state.firstFailures;
      await mine.touch('b', 1);
      await mine.touch('c', 1);
      mine.clear('b');
      await mine.touch('d', 2);
      // b's clear went out with d's failure; c was never cleared.
      expect(await other.firstFailures.touch('b', 5)).toBe(5);
      expect(await other.firstFailures.touch('c', 5)).toBe(1);
      expect(await other.firstFailures.touch('d', 5)).toBe(2);
    });
  });
}
