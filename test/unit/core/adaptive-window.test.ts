import { describe, expect, it } from 'vitest';
import { AdaptiveWindow, AgeTrend, type WindowTicket } from '../../../src/core/adaptive-window.js';

describe('AdaptiveWindow', () => {
  it('grants up to the window at once, then in order; a refused retry goes to the front', async () => {
    const w = new AdaptiveWindow({ start: 2, min: 1, max: 8 });
    const a = await w.acquire();
    const b = await w.acquire();
    const order: string[] = [];
    const c = w.acquire().then((t) => (order.push('c'), t));
    const d = w.acquire().then((t) => (order.push('d'), t));
    const retry = w.acquire(undefined, { front: true }).then((t) => (order.push('retry'), t));
    expect([w.inUse, w.pending]).toEqual([2, 3]);
    a.release();
    b.release();
    (await retry).release();
    (await c).release();
    (await d).release();
    expect(order).toEqual(['retry', 'c', 'd']);
    expect([w.inUse, w.pending]).toEqual([0, 0]);
  });

  it('a waiter whose signal aborts leaves the queue', async () => {
    const w = new AdaptiveWindow({ start: 1, min: 1, max: 1 });
    const held = await w.acquire();
    const ac = new AbortController();
    const waiting = w.acquire(ac.signal);
    ac.abort(new Error('deadline'));
    await expect(waiting).rejects.toThrow('deadline');
    expect(w.pending).toBe(0);
    held.release();
    expect(w.inUse).toBe(0);
  });

  /**
   * `n` pieces of work finished in good health (grow, then release) while more work always waits
   * (demand above the window); then the work still held or waiting is dropped without growing.
   */
  async function rounds(w: AdaptiveWindow, n: number): Promise<void> {
    const stop = new AbortController();
    const pending: Promise<WindowTicket | undefined>[] = [];
    const ask = () => pending.push(w.acquire(stop.signal).catch(() => undefined));
    const keepWaiting = () => {
      while (w.pending < 1) ask();
    };
    keepWaiting();
    for (let done = 0; done < n; done++) {
      const t = (await pending.shift()) as WindowTicket;
      keepWaiting();
      w.grow();
      t.release();
    }
    const held = w.inUse;
    stop.abort(new Error('done'));
    const rest = await Promise.all(pending);
    for (const t of rest) t?.release();
    expect(rest.filter((t) => t !== undefined)).toHaveLength(held);
  }

  it('slow start doubles per round while limiting, up to max; an idle window does not grow', async () => {
    const w = new AdaptiveWindow({ start: 4, min: 1, max: 10 });
    w.grow();
    expect(w.limit).toBe(4); // nothing in use: not the limit, no growth
    const one = await w.acquire();
    w.grow();
    one.release();
    expect(w.limit).toBe(4); // one of four in use, nobody waiting: still not the limit
    await rounds(w, 4);
    expect(w.limit).toBe(8);
    await rounds(w, 8);
    expect(w.limit).toBe(10);
  });

  it('shrinks once per round trip: signals from work started before the last decrease do not count', async () => {
    let now = 1000;
    const w = new AdaptiveWindow({ start: 16, min: 2, max: 16, now: () => now });
    const old = await w.acquire();
    now = 2000;
    expect(w.shrink(old.startedAt, 0.5)).toBe(true);
    expect(w.limit).toBe(8);
    // The same burst's other refusals (work started before the decrease): no second cut.
    expect(w.shrink(old.startedAt, 0.5)).toBe(false);
    expect(w.limit).toBe(8);
    now = 3000;
    const fresh = await w.acquire();
    expect(w.shrink(fresh.startedAt, 0.5)).toBe(true);
    expect(w.limit).toBe(4);
    old.release();
    fresh.release();
    // Never below min.
    for (let i = 0; i < 5; i++) {
      now += 1000;
      const t = await w.acquire();
      w.shrink(t.startedAt, 0.5);
      t.release();
    }
    expect(w.limit).toBe(2);
    expect(w.capacity).toBe(2);
  });

  it('after a decrease it grows additively: +1 per round of healthy answers', async () => {
    let now = 0;
    const w = new AdaptiveWindow({ start: 8, min: 1, max: 64, now: () => now });
    const t = await w.acquire();
    now = 1;
    w.shrink(t.startedAt, 0.5);
    t.release();
    expect(w.limit).toBe(4);
    // One round: as many healthy answers as the window holds, with more work waiting.
    await rounds(w, 4);
    expect(w.limit).toBeGreaterThan(4.9);
    expect(w.limit).toBeLessThan(5.1);
  });
});

describe('AgeTrend', () => {
  it('says nothing before it has a sample, and nothing while ages stay near the baseline', () => {
    const t = new AgeTrend({ slackMs: 100, sample: 4, now: () => 0 });
    for (const age of [2000, 2100, 1900, 2050, 2000, 2300, 2200, 2400]) expect(t.record(age)).toBe(false);
    expect(t.baseline).toBe(2050);
  });

  it('reports growth when the median is 1.5 x the baseline and above it by more than the slack', () => {
    const t = new AgeTrend({ slackMs: 100, sample: 4, now: () => 0 });
    for (const age of [2000, 2000, 2000, 2000]) t.record(age);
    // Half of the sample above: the (upper) median moves.
    expect(t.record(4000)).toBe(false);
    expect(t.record(4000)).toBe(true);
    // Small ages: a doubling within the slack is jitter, not a queue.
    const small = new AgeTrend({ slackMs: 100, sample: 4, now: () => 0 });
    for (const age of [20, 20, 20, 20, 60, 60, 60, 60]) expect(small.record(age)).toBe(false);
  });

  it('the baseline is the lowest median of the last baselineMs: it forgets old lows', () => {
    let now = 0;
    const t = new AgeTrend({ slackMs: 10, sample: 2, baselineMs: 1000, now: () => now });
    t.record(100);
    t.record(100);
    expect(t.baseline).toBe(100);
    now = 5000;
    t.record(400);
    t.record(400);
    expect(t.baseline).toBe(400);
  });
});
