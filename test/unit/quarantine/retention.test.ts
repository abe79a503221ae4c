import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { silentLogger } from '../../../src/core/logger.js';
import { SUSPICIOUS_DECISION as decision } from '../../support/quarantine-items.js';
import { BufferMessage } from '../../../src/mime/spool.js';
import { RetentionJob } from '../../../src/quarantine/retention.js';
import type { QuarantineStore, StatePorts } from '../../../src/core/ports.js';
import { openSqliteState } from '../../../src/store/sqlite-state.js';
import { tempDir } from '../../support/tmp.js';
import { LogCapture } from '../../support/pt-sandbox.js';

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

  it('runs once for every process on the state: the job lease lets one store run the passes', async () => {
    const { dir, store, put, advance } = setup();
    await put('a1');
    await put('a2');
    advance(3 * DAY);
    // A second process on the same state (its own connection), both with the cluster lease.
    let now = Date.UTC(2025, 0, 10);
    const other = openSqliteState(dir, { now: () => now });
    onTestFinished(() => other.close());
    const passes = { a: 0, b: 0 };
    const counting = (s: QuarantineStore, name: 'a' | 'b'): QuarantineStore =>
      new Proxy(s, {
        get(target, prop, receiver) {
          if (prop === 'enforceRetention') {
            return async (limits: { maxAgeMs: number; maxTotalBytes: number }) => {
              passes[name]++;
              // Slow enough that the two passes overlap without the lease.
              await new Promise((r) => setTimeout(r, 50));
              return target.enforceRetention(limits);
            };
          }
          return Reflect.get(target, prop, receiver) as unknown;
        },
      });
    const limits = { maxAgeMs: 2 * DAY, maxTotalBytes: 1e12 };
    const logA = new LogCapture('debug');
    const logB = new LogCapture('debug');
    const lease = (cluster: StatePorts['cluster'], owner: string) => ({
      cluster,
      owner,
      holdMs: 90_000,
      now: () => now,
    });
    const jobA = new RetentionJob(counting(store, 'a'), limits, logA.log, lease(state!.cluster, 'proc-a'));
    const jobB = new RetentionJob(
      counting(other.quarantine, 'b'),
      limits,
      logB.log,
      lease(other.cluster, 'proc-b'),
    );
    const [removedA, removedB] = await Promise.all([jobA.runOnce(), jobB.runOnce()]);
    expect(passes.a + passes.b).toBe(1);
    expect([...removedA, ...removedB].sort()).toEqual(['a1', 'a2']);
    const skipped = passes.a === 1 ? logB : logA;
    expect(skipped.events()).toContain('quarantine.retention_skipped');
    // The process that ran the pass keeps the lease at its next tick; the other keeps skipping.
    now += 60_000;
    await Promise.all([jobA.runOnce(), jobB.runOnce()]);
    expect(passes.a + passes.b).toBe(2);
    expect(Math.min(passes.a, passes.b)).toBe(0);
    // It stops (its lease runs out): the other takes over.
    now += 90_001;
    const waiting = passes.a === 0 ? jobA : jobB;
    await waiting.runOnce();
    expect(Math.min(passes.a, passes.b)).toBe(1);
  });
});
