import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/logger.js';
import type { Decision } from '../../../src/core/policy.js';
import { BufferMessage } from '../../../src/mime/spool.js';
import { RetentionJob } from '../../../src/quarantine/retention.js';
import type { QuarantineStore, StatePorts } from '../../../src/core/ports.js';
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

  it('runs one pass at a time: a tick during a slow pass joins it; stop waits for it', async () => {
    let passes = 0;
    let finish!: (ids: string[]) => void;
    const slow = {
      enforceRetention: () => {
        passes++;
        return new Promise<string[]>((resolve) => (finish = resolve));
      },
    } as unknown as QuarantineStore;
    const job = new RetentionJob(slow, { maxAgeMs: DAY, maxTotalBytes: 1e12 }, silentLogger);
    const first = job.runOnce();
    const second = job.runOnce();
    expect(passes).toBe(1);
    let stopped = false;
    const stopping = job.stop().then(() => (stopped = true));
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(false);
    finish(['x1']);
    expect(await first).toEqual(['x1']);
    expect(await second).toEqual(['x1']);
    await stopping;
    expect(stopped).toBe(true);
    // The next pass is a new one.
    void job.runOnce();
    expect(passes).toBe(2);
    finish([]);
  });
});
