import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEADLINE_SLOT_MS, DeadlineSignals } from '../../../src/core/deadline-signals.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('DeadlineSignals', () => {
  it('shares one signal between deadlines of a slot and fires it after the latest of them, within a slot', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const signals = new DeadlineSignals(() => Date.now());
    const deadline = 1_000_000 + 10 * DEADLINE_SLOT_MS + 1;
    const a = signals.at(deadline);
    const b = signals.at(deadline + DEADLINE_SLOT_MS - 2);
    const later = signals.at(deadline + DEADLINE_SLOT_MS);
    expect(b).toBe(a);
    expect(later).not.toBe(a);
    expect(signals.pending).toBe(2);

    // The slot ends at 11 slots from now: the latest deadline sharing it (b's) is one ms before.
    vi.advanceTimersByTime(11 * DEADLINE_SLOT_MS - 1);
    expect(a.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(a.aborted).toBe(true);
    expect((a.reason as Error).name).toBe('TimeoutError');
    expect(later.aborted).toBe(false);
    expect(signals.pending).toBe(1);
    vi.advanceTimersByTime(DEADLINE_SLOT_MS);
    expect(later.aborted).toBe(true);
    expect(signals.pending).toBe(0);
  });

  it('never fires before the deadline asked for', () => {
    vi.useFakeTimers({ now: 5_000_000 });
    const signals = new DeadlineSignals(() => Date.now());
    const fired: number[] = [];
    const deadlines = [1, 2, 249, 250, 251, 499, 500, 777].map((d) => 5_000_000 + d);
    for (const d of deadlines) {
      signals.at(d).addEventListener('abort', () => fired.push(Date.now() - d), { once: true });
    }
    vi.advanceTimersByTime(2_000);
    expect(fired).toHaveLength(deadlines.length);
    for (const late of fired) {
      expect(late).toBeGreaterThanOrEqual(0);
      expect(late).toBeLessThan(DEADLINE_SLOT_MS);
    }
  });

  it('gives a deadline already past a fresh signal that fires at once', () => {
    vi.useFakeTimers({ now: 9_000_000 });
    const signals = new DeadlineSignals(() => Date.now());
    const s = signals.at(9_000_000 - 10_000);
    expect(s.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(s.aborted).toBe(true);
    expect(signals.pending).toBe(0);
  });

  it('takes listeners from many calls in flight without a leak warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const signal = new DeadlineSignals().at(Date.now() + 60_000);
      const listeners = Array.from({ length: 50 }, () => () => undefined);
      for (const l of listeners) signal.addEventListener('abort', l);
      // emitWarning is delivered on a later tick.
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
      for (const l of listeners) signal.removeEventListener('abort', l);
    } finally {
      process.off('warning', onWarning);
    }
  });
});
