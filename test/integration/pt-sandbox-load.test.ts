/**
 * Back-pressure against an appliance with a capacity (the fake's analysis slots, its queue, and
 * 429/503 refusals): the in-flight window comes down to what the appliance can take and grows
 * again when it clears, every message is answered or tempfailed by its deadline, never lost.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/cli/runtime.js';
import { createMetrics } from '../../src/core/metrics.js';
import { startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { makeScanner, openTestState, simpleMail, testConfig, type TestState } from '../support/pt-sandbox.js';
import { message, startRuntime } from '../support/runtime.js';

let sb: FakePtSandbox | undefined;
let state: TestState | undefined;
let rt: Runtime | undefined;

afterEach(async () => {
  await rt?.close();
  rt = undefined;
  await state?.close();
  state = undefined;
  await sb?.close();
  sb = undefined;
});

async function setup(fake: FakePtSandbox, overrides: Record<string, unknown> = {}) {
  state = openTestState();
  const metrics = createMetrics({ defaultMetrics: false });
  const scanner = makeScanner(
    testConfig(fake.url, {
      polling: { firstDelay: '50ms', interval: '1s' },
      requestTimeout: '2s',
      ...overrides,
    }),
    state,
    { metrics },
  );
  rt = await startRuntime(state.dir, [scanner], { config: { scan: { chain: ['pt-sandbox'] } }, metrics });
  return { scanner, rt };
}

let seq = 0;
/** Evaluates `count` new messages at once; each result says how far before its deadline it came. */
function burst(runtime: Runtime, count: number, budgetMs: number) {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const deadline = Date.now() + budgetMs;
      const r = await runtime.evaluator.evaluate(message(simpleMail(`load ${seq++}`)), { deadline });
      return { action: r.decision.action, lateMs: Date.now() - deadline };
    }),
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function metric(runtime: Runtime, name: string): Promise<string> {
  return runtime.metrics.registry.getSingleMetricAsString(name);
}

describe('PT Sandbox back-pressure', () => {
  it('an appliance with 8 slots: the window settles near 8, every message is answered by its deadline', async () => {
    sb = await startFakePtSandbox({ slots: 8, taskDurationMs: 200 });
    const fake = sb;
    // Starting at 2 x the appliance's slots (the default start, 32, only takes longer to come down).
    const { scanner, rt } = await setup(fake, { inflight: { start: 16 } });
    const samples: Array<{ t: number; atAppliance: number; window: number }> = [];
    const t0 = Date.now();
    const sampler = setInterval(() => {
      const l = fake.load();
      samples.push({ t: Date.now() - t0, atAppliance: l.running + l.queued, window: scanner.inflight.limit });
    }, 25);
    const results = await burst(rt, 240, 8_000);
    clearInterval(sampler);
    const end = Date.now() - t0;

    // Never lost: each message delivered, or tempfailed at its deadline at the latest.
    expect(results.filter((r) => r.action !== 'deliver' && r.action !== 'tempfail')).toEqual([]);
    expect(Math.max(...results.map((r) => r.lateMs))).toBeLessThan(300);
    expect(fake.load().maxRunning).toBe(8);

    // It starts above the appliance's capacity and comes down as task ages grow.
    expect(await metric(rt, 'sandgate_pt_window_decreases_total')).toMatch(/cause="age"} [1-9]/);
    const settled = samples.filter((s) => s.t >= 3_000 && s.t <= end - 500);
    expect(settled.length).toBeGreaterThan(20);
    expect(median(settled.map((s) => s.atAppliance))).toBeLessThanOrEqual(16);
    expect(median(settled.map((s) => s.window))).toBeLessThanOrEqual(16);
    expect(median(settled.map((s) => s.window))).toBeGreaterThanOrEqual(4);
  });

  it('429 bursts: the window backs off instead of flooding, refused submissions succeed later within the deadline, and it recovers', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 40 });
    const fake = sb;
    const { scanner, rt } = await setup(fake);

    // Healthy: the window is at least where it starts.
    expect((await burst(rt, 40, 10_000)).filter((r) => r.action !== 'deliver')).toEqual([]);
    const healthy = scanner.inflight.limit;
    expect(healthy).toBeGreaterThanOrEqual(32);

    // Overloaded for 1.5 s, while 60 new messages (6 s to spare each) arrive.
    fake.refuseSubmissions(429);
    let lowest = healthy;
    const watch = setInterval(() => (lowest = Math.min(lowest, scanner.inflight.limit)), 10);
    const during = burst(rt, 60, 6_000);
    await new Promise((r) => setTimeout(r, 1_500));
    const refusedDuringOverload = fake.load().refused;
    fake.refuseSubmissions(undefined);
    const results = await during;
    clearInterval(watch);
    expect(results.filter((r) => r.action !== 'deliver')).toEqual([]);
    expect(lowest).toBeLessThanOrEqual(4);
    // Backing off: a few refused requests per message at most (retrying each message at once would
    // be thousands in 1.5 s).
    expect(refusedDuringOverload).toBeGreaterThan(0);
    expect(refusedDuringOverload).toBeLessThan(200);
    expect(await metric(rt, 'sandgate_pt_window_decreases_total')).toMatch(/cause="refused"} [1-9]/);
    expect(await metric(rt, 'sandgate_pt_submissions_refused_total')).toMatch(/status="429"} [1-9]/);

    // Cleared: the window grows again with healthy answers (+1 per round of them).
    const afterOverload = scanner.inflight.limit;
    for (let round = 0; round < 8 && scanner.inflight.limit <= afterOverload + 3; round++) {
      expect((await burst(rt, 30, 15_000)).filter((r) => r.action !== 'deliver')).toEqual([]);
    }
    expect(scanner.inflight.limit).toBeGreaterThan(afterOverload + 3);
  });

  it('503 with Retry-After: the submission waits as told, then succeeds', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 20 });
    const fake = sb;
    const { rt } = await setup(fake);
    fake.refuseSubmissions(503, { retryAfterSec: 1 });
    const pending = burst(rt, 1, 5_000);
    while (fake.load().refused === 0) await new Promise((r) => setTimeout(r, 5));
    fake.refuseSubmissions(undefined);
    const started = Date.now();
    const [result] = await pending;
    expect(result?.action).toBe('deliver');
    // Retry-After: 1 s was honoured (the configured backoff is 10 ms).
    expect(Date.now() - started).toBeGreaterThanOrEqual(800);
    expect(fake.load().refused).toBe(1);
  });
});
