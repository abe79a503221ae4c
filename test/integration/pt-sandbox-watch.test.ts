/**
 * `sandgate sandbox health --watch`: the host's PT Sandbox load from the state database, written
 * by the scanners of every process (pt_task, pt_task_history, pt_process, scanner_version).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/sandbox.js';
import { bottleneck, type WatchReport } from '../../src/cli/commands/sandbox-watch.js';
import type { Runtime } from '../../src/cli/runtime.js';
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

async function health(args: string[], configFile: string) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => (out += c.toString()));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await run(['health', '--config', configFile, ...args], {
    stdin: new PassThrough(),
    stdout,
    stderr,
    env: {},
    cwd: '/',
  });
  return { code, out, err };
}

async function watchOnce(configFile: string): Promise<WatchReport> {
  const r = await health(['--watch', '--count', '1', '--json'], configFile);
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as WatchReport;
}

async function until<T>(probe: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const limit = Date.now() + 10_000;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > limit) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('sandgate sandbox health --watch', () => {
  it('shows tasks in flight, submissions waiting, the window, task ages, the version and the bottleneck', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 60_000, version: '5.11.0.777' });
    const fake = sb;
    state = openTestState();
    const cfg = testConfig(fake.url, { inflight: { max: 2, start: 2, min: 1 } });
    const scanner = makeScanner(cfg, state, { frontEnd: 'helper', owner: 'host-a:101' });
    rt = await startRuntime(state.dir, [scanner], { config: { scan: { chain: ['pt-sandbox'] } } });
    const configFile = join(state.dir, 'sandgate.yaml');
    writeFileSync(configFile, stringify({ stateDir: state.dir, scanners: { ptSandbox: { url: fake.url } } }));
    const runtime = rt;
    const pending = Array.from({ length: 6 }, (_, i) =>
      runtime.evaluator.evaluate(message(simpleMail(`watch ${i}`)), { deadline: Date.now() + 30_000 }),
    );

    const busy = await until(
      () => watchOnce(configFile),
      (r) => r.inFlight === 2 && r.waiting === 4,
      'two tasks in flight and four waiting',
    );
    expect(busy).toMatchObject({
      window: 2,
      windowMax: 2,
      version: '5.11.0.777',
      bottleneck: 'sandgate',
      processes: [
        { frontEnd: 'helper', owner: 'host-a:101', inflight: 2, waiting: 4, window: 2, windowMax: 2 },
      ],
    });
    expect(busy.why).toContain('inflight.max');

    // The tasks finish: their ages are in the history, nothing waits any more.
    fake.setTaskDuration(0);
    fake.finishAll();
    const results = await Promise.all(pending);
    expect(results.every((r) => r.decision.action === 'deliver')).toBe(true);
    const done = await until(
      () => watchOnce(configFile),
      (r) => r.waiting === 0 && r.inFlight === 0,
      'the queue to drain',
    );
    expect(done.finishedPerSec).toBeGreaterThan(0);
    expect(done.submittedPerSec).toBeGreaterThan(0);
    expect(done.ageP50Ms).toBeGreaterThan(0);
    expect(done.bottleneck).toBe('none');

    // The text form, refreshed twice.
    const text = await health(['--watch', '--count', '2', '--interval', '100ms'], configFile);
    expect(text.code).toBe(0);
    expect(text.out.match(/^version {5}5\.11\.0\.777/gm)).toHaveLength(2);
    expect(text.out).toMatch(/^in flight {3}0 tasks at the appliance/m);
    expect(text.out).toMatch(/^ {2}helper +host-a:101 +in flight 0, waiting 0, window 2\/2/m);
    expect(text.out).toMatch(/^bottleneck {2}none: nothing waits in sandgate$/m);

    // Closing the scanner removes its row: the process is gone from the watch.
    await scanner.close();
    expect((await watchOnce(configFile)).processes).toEqual([]);
  });

  it('rejects a bad --interval or --count with the flag named', async () => {
    state = openTestState();
    const configFile = join(state.dir, 'sandgate.yaml');
    writeFileSync(configFile, stringify({ stateDir: state.dir }));
    const bad = await health(['--watch', '--interval', 'soon'], configFile);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--interval soon.*\[ERR_CONFIG_INVALID\]/);
    const count = await health(['--watch', '--count', '0'], configFile);
    expect(count.code).toBe(2);
    expect(count.err).toMatch(/--count 0.*\[ERR_CONFIG_INVALID\]/);
  });
});

describe('bottleneck', () => {
  const base = {
    inFlight: 8,
    submitting: 0,
    oldestInFlightMs: 3000,
    waiting: 20,
    window: 64,
    windowMax: 64,
    submittedPerSec: 10,
    finishedPerSec: 10,
    refusedPerSec: 0,
    ageP50Ms: 2400,
    ageP99Ms: 4000,
    usualAgeP50Ms: 2300,
    processes: [],
  };
  it('names the appliance when it refuses work or its task ages grew, sandgate when its windows are full', () => {
    expect(bottleneck(base).bottleneck).toBe('sandgate');
    expect(bottleneck({ ...base, refusedPerSec: 3 }).bottleneck).toBe('appliance');
    expect(bottleneck({ ...base, window: 12, ageP50Ms: 9000 }).bottleneck).toBe('appliance');
    expect(bottleneck({ ...base, waiting: 0 }).bottleneck).toBe('none');
    expect(bottleneck({ ...base, window: 20 }).why).toMatch(/grow back/);
  });
});
