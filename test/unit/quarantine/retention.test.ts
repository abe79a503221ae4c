import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/logger.js';
import type { Decision } from '../../../src/core/policy.js';
import { BufferMessage } from '../../../src/mime/spool.js';
import { RetentionJob } from '../../../src/quarantine/retention.js';
import type { StatePorts } from '../../../src/core/ports.js';
import { openSqliteState } from '../../../src/store/sqlite-state.js';
import { tempDir } from '../../support/tmp.js';

const decision: Decision = {
  action: 'quarantine',
  keepCopy: true,
  verdict: 'suspicious',
  reason: 'suspicious',
  threats: ['X'],
  failOpen: false,
};
const DAY = 86_400_000;

let state: StatePorts | undefined;
afterEach(async () => {
  await state?.close();
  state = undefined;
});

function setup() {
  const dir = tempDir();
  let now = Date.UTC(2025, 0, 1);
  state = openSqliteState(dir, { now: () => now });
  const store = state.quarantine;
  const put = async (id: string, bytes = 2000) => {
    // Random-ish bytes so gzip keeps them about this size.
    const body = Buffer.from(
      Array.from({ length: bytes }, (_, i) =>
        String.fromCharCode(33 + ((i * 7919 + id.length * 31) % 90)),
      ).join(''),
    );
    await store.put({
      message: new BufferMessage(
        id,
        { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' },
        body,
      ),
      contentKey: id.padEnd(64, '0'),
      decision,
      outcomes: [],
    });
  };
  return { dir, store, put, advance: (ms: number) => (now += ms) };
}

describe('quarantine retention', () => {
  it('removes items past maxAge, oldest first, with their files', async () => {
    const { store, put, advance, dir } = setup();
    await put('a1');
    advance(DAY);
    await put('a2');
    advance(DAY);
    await put('a3');
    const a1 = await store.get('a1');
    advance(DAY);
    const job = new RetentionJob(store, { maxAgeMs: 2.5 * DAY, maxTotalBytes: 1e12 }, silentLogger);
    expect(await job.runOnce()).toEqual(['a1']);
    expect(existsSync(join(dir, 'quarantine', a1.file))).toBe(false);
    expect((await store.list()).map((i) => i.id)).toEqual(['a3', 'a2']);
    advance(DAY);
    expect(await job.runOnce()).toEqual(['a2']);
  });

  it('removes the oldest first until the total size fits', async () => {
    const { store, put, advance } = setup();
    for (const id of ['b1', 'b2', 'b3', 'b4']) {
      await put(id);
      advance(60_000);
    }
    const sizes = (await store.list()).map((i) => i.storedSize);
    const total = await store.totalStoredBytes();
    expect(total).toBe(sizes.reduce((a, b) => a + b, 0));
    // Room for about two items: the two oldest go, in order.
    const limit = total - (await store.get('b1')).storedSize - (await store.get('b2')).storedSize;
    const removed = await store.enforceRetention({ maxAgeMs: 365 * DAY, maxTotalBytes: limit });
    expect(removed).toEqual(['b1', 'b2']);
    expect(await store.totalStoredBytes()).toBeLessThanOrEqual(limit);
    expect((await store.list()).map((i) => i.id)).toEqual(['b4', 'b3']);
    expect(await store.enforceRetention({ maxAgeMs: 365 * DAY, maxTotalBytes: limit })).toEqual([]);
  });

  it('a deleted item does not come back through recovery', async () => {
    const { store, put } = setup();
    await put('c1');
    await store.delete('c1');
    expect(await store.recover()).toEqual({ indexed: 0, removed: 0 });
    expect(await store.count()).toBe(0);
  });
});
