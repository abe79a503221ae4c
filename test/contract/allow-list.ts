/** Contract of the operators' allow list of attachment hashes (AllowList). */
import { describe, expect, it } from 'vitest';
import type { StateBackend } from './backend.js';

const A = 'a'.repeat(64);
const B = 'B'.repeat(64);
const C = 'c'.repeat(63) + '1';

export function allowListContract(backend: StateBackend): void {
  describe(`AllowList (${backend.name})`, () => {
    it('adds hashes in lower case, once; has() ignores case; another process sees them', async () => {
      let now = 1000;
      const opened = await backend.open({ now: () => now });
      const list = opened.state.allowList;
      expect(await list.has(A)).toBe(false);
      expect(await list.add([A, B], 'cli:ops', { quarantineId: 'q1', note: 'released' })).toEqual([
        A,
        B.toLowerCase(),
      ]);
      now = 2000;
      expect(await list.add([B.toLowerCase(), C], 'api:alice')).toEqual([C]);
      expect(await list.has(A.toUpperCase())).toBe(true);
      expect(await list.has(B)).toBe(true);
      const other = await opened.another();
      expect(await other.allowList.has(C)).toBe(true);
      expect(await other.allowList.list()).toEqual([
        { sha256: A, addedAt: 1000, addedBy: 'cli:ops', quarantineId: 'q1', note: 'released' },
        { sha256: B.toLowerCase(), addedAt: 1000, addedBy: 'cli:ops', quarantineId: 'q1', note: 'released' },
        { sha256: C, addedAt: 2000, addedBy: 'api:alice' },
      ]);
    });

    it('a bad hash refuses the whole add', async () => {
      const { state } = await backend.open();
      const err = await state.allowList.add([A, 'not-a-hash'], 'cli:ops').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TypeError);
      expect(await state.allowList.list()).toEqual([]);
      expect(await state.allowList.has(A)).toBe(false);
    });

    it('remove forgets a hash; the revision changes with every add and remove', async () => {
      let now = 1000;
      const opened = await backend.open({ now: () => now });
      const list = opened.state.allowList;
      const empty = await list.revision();
      await list.add([A], 'x');
      const one = await list.revision();
      expect(one).not.toBe(empty);
      now = 2000;
      await list.add([C], 'x');
      const two = await list.revision();
      expect(two).not.toBe(one);
      const other = await opened.another();
      expect(await other.allowList.revision()).toBe(two);
      expect(await list.remove(A.toUpperCase())).toBe(true);
      expect(await list.remove(A)).toBe(false);
      expect(await list.has(A)).toBe(false);
      expect(await list.revision()).not.toBe(two);
      // Adding what is there changes nothing.
      const before = await list.revision();
      expect(await list.add([C], 'y')).toEqual([]);
      expect(await list.revision()).toBe(before);
    });
  });
}
