/**
 * The appliance's version is stored with each verdict, never part of its cache key: a judged
 * message is not submitted again while getVersion fails or hangs, in one process (the scan service
 * with the real PT Sandbox scanner) and across processes (`sandgate scan` as real processes), and
 * a burst of new messages makes one version lookup per process.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import type { Runtime } from '../../src/cli/runtime.js';
import { openStateDb } from '../../src/store/db.js';
import { FAKE_PT_TOKEN, startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { runSandgate } from '../support/cli.js';
import { makeScanner, openTestState, simpleMail, testConfig, type TestState } from '../support/pt-sandbox.js';
import { LogCapture, message, startRuntime } from '../support/runtime.js';
import { tempDir } from '../support/tmp.js';
import { memoryIo } from './quarantine-harness.js';

const VERSION = '5.11.0.12345';
let sb: FakePtSandbox;
let state: TestState;
let rt: Runtime | undefined;

beforeEach(async () => {
  sb = await startFakePtSandbox({ taskDurationMs: 20, version: VERSION });
  state = openTestState();
});
afterEach(async () => {
  await rt?.close();
  rt = undefined;
  await state.close();
  await sb.close();
});

/** The scan service with the real PT Sandbox scanner against the fake; `clock()` moves its time. */
async function service(logs = new LogCapture(), requestTimeout = '1s') {
  let offset = 0;
  const scanner = makeScanner(testConfig(sb.url, { requestTimeout }), state);
  rt = await startRuntime(state.dir, [scanner], {
    config: { scan: { chain: ['pt-sandbox'] } },
    now: () => Date.now() + offset,
    logs,
  });
  return {
    rt,
    logs,
    advance: (ms: number) => (offset += ms),
    /** A deadline on the service's clock. */
    inTen: () => Date.now() + offset + 10_000,
  };
}

describe('scanner version out of the cache key (one process)', () => {
  it('a judged message is answered from the cache while getVersion fails, and while it hangs', async () => {
    const { rt, logs, advance, inTen } = await service();
    const text = simpleMail('judged once', { extraHeaders: ['X-Test-Verdict: UNWANTED'] });
    const first = await rt.evaluator.evaluate(message(text), { deadline: inTen() });
    expect(first.outcomes[0]).toMatchObject({ kind: 'suspicious', cached: false, version: VERSION });
    expect(sb.tasksCreated()).toBe(1);

    // The version is due again (10 minutes), and the appliance answers getVersion with 500.
    sb.setVersionBehaviour({ status: 500 });
    advance(11 * 60_000);
    const retried = `Received: from mx2.example.org by gw.example.net\r\n${text}`;
    const failing = await rt.evaluator.evaluate(message(retried), { deadline: inTen() });
    expect(failing.outcomes[0]).toMatchObject({ kind: 'suspicious', cached: true, version: VERSION });
    await rt.evaluator.settle();
    expect(logs.events('scanner.version_failed')[0]).toMatchObject({ scanner: 'pt-sandbox', known: VERSION });

    // A minute later the lookup is tried again, and now it hangs: the message is not held up.
    sb.setVersionBehaviour({ delayMs: 30_000 });
    advance(61_000);
    const started = Date.now();
    const hanging = await rt.evaluator.evaluate(message(retried), { deadline: inTen() });
    expect(Date.now() - started).toBeLessThan(500);
    expect(hanging.outcomes[0]).toMatchObject({ kind: 'suspicious', cached: true, version: VERSION });
    expect(sb.tasksCreated()).toBe(1);
    expect(sb.counters['maintenance/getVersion']).toBeGreaterThanOrEqual(3);
  });

  it('200 new messages at once while getVersion fails: one lookup, one task per content', async () => {
    sb.setVersionBehaviour({ status: 500 });
    // 200 uploads at once: a busy machine must not turn them into request timeouts (getVersion fails fast).
    const { rt } = await service(new LogCapture(), '15s');
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        rt.evaluator.evaluate(message(simpleMail(`new content ${i}`)), { deadline: Date.now() + 20_000 }),
      ),
    );
    await rt.evaluator.settle();
    // One lookup: the client's own retries of a 5xx (retries.attempts, 3 in this config) at most.
    expect(sb.counters['maintenance/getVersion']).toBeLessThanOrEqual(3);
    expect(results.filter((r) => r.decision.action !== 'deliver').map((r) => r.outcomes)).toEqual([]);
    // Nothing is known yet: verdicts are stored without a version rather than with a made-up one.
    expect(results.every((r) => r.outcomes[0]?.version === undefined)).toBe(true);
    expect(sb.tasksCreated()).toBe(200);
    const lookups = await rt.metrics.registry.getSingleMetricAsString(
      'sandgate_scanner_version_lookups_total',
    );
    expect(lookups).toContain('scanner="pt-sandbox",result="failed"} 1');
  });

  it('after a restart with getVersion failing from the start, a judged message is answered from the cache', async () => {
    const first = await service();
    const text = simpleMail('judged before the restart', { extraHeaders: ['X-Test-Verdict: UNWANTED'] });
    await first.rt.evaluator.evaluate(message(text), { deadline: first.inTen() });
    await first.rt.close();
    rt = undefined;
    expect(sb.tasksCreated()).toBe(1);

    sb.setVersionBehaviour({ status: 500 });
    const second = await service();
    const again = await second.rt.evaluator.evaluate(message(text), { deadline: second.inTen() });
    expect(again.outcomes[0]).toMatchObject({ kind: 'suspicious', cached: true });
    expect(sb.tasksCreated()).toBe(1);
    // The version known before the restart, from the state database.
    expect(again.outcomes[0]?.version).toBe(VERSION);
  });
});

describe('the version with the verdict, where operators look', () => {
  it('a quarantined item names the appliance version that judged it (sandgate quarantine show)', async () => {
    const { rt, inTen } = await service();
    const judged = await rt.evaluator.evaluate(
      message(simpleMail('bad', { extraHeaders: ['X-Test-Verdict: DANGEROUS'] })),
      { deadline: inTen() },
    );
    expect(judged.decision.action).toBe('reject');
    const id = judged.quarantineId!;
    expect((await rt.quarantine.get(id))?.outcomes[0]).toMatchObject({
      scanner: 'pt-sandbox',
      version: VERSION,
    });
    const mem = memoryIo(state.dir);
    const code = await main(
      ['quarantine', 'show', id, '--set', `stateDir=${state.dir}`, '--set', 'log.level=silent'],
      mem.io,
    );
    expect(code).toBe(0);
    expect(mem.stdout().toString()).toMatch(
      /^ {2}pt-sandbox: malicious\(Fake\.Dangerous\.Marker\) {2}version=5\.11\.0\.12345/m,
    );
  });
});

describe('scanner version out of the cache key (sandgate scan processes)', () => {
  function setup() {
    const dir = tempDir('sg-ptv-');
    const tokenFile = join(dir, 'pt.token');
    writeFileSync(tokenFile, FAKE_PT_TOKEN);
    writeFileSync(
      join(dir, 'sandgate.yaml'),
      stringify({
        stateDir: join(dir, 'state'),
        scan: { chain: ['pt-sandbox'] },
        scanners: {
          ptSandbox: {
            url: sb.url,
            tokenFile,
            requestTimeout: '2s',
            polling: { firstDelay: '20ms', interval: '50ms' },
          },
        },
      }),
    );
    const text = simpleMail('judged by another process', { extraHeaders: ['X-Test-Verdict: UNWANTED'] });
    writeFileSync(join(dir, 'm.eml'), text);
    writeFileSync(join(dir, 'retry.eml'), `Received: from mx2.example.org by gw.example.net\n${text}`);
    const scan = (file: string) =>
      runSandgate(['scan', '--config', 'sandgate.yaml', '--json', file], { cwd: dir }).then((r) => ({
        ...r,
        outcome:
          r.code === 1
            ? (JSON.parse(r.stdout) as { outcomes: Record<string, unknown>[] }).outcomes[0]
            : undefined,
      }));
    return { dir, scan };
  }

  it('four processes at once, getVersion failing and then hanging: no new task, the stored version shown', async () => {
    const { dir, scan } = setup();
    const first = await scan('m.eml');
    expect(first.code).toBe(1);
    expect(first.outcome).toMatchObject({ kind: 'suspicious', cached: false, version: VERSION });
    expect(sb.tasksCreated()).toBe(1);

    // The stored version is old (every process looks it up again), and getVersion fails.
    const db = openStateDb(join(dir, 'state'));
    db.prepare('UPDATE scanner_version SET checked_at = 0').run();
    db.close();
    sb.setVersionBehaviour({ status: 500 });
    const failing = await Promise.all(Array.from({ length: 4 }, () => scan('retry.eml')));
    for (const r of failing) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.outcome).toMatchObject({ kind: 'suspicious', cached: true, version: VERSION });
    }

    sb.setVersionBehaviour({ delayMs: 60_000 });
    const hanging = await Promise.all(Array.from({ length: 4 }, () => scan('retry.eml')));
    for (const r of hanging) expect(r.outcome).toMatchObject({ cached: true, version: VERSION });
    expect(sb.tasksCreated()).toBe(1);
    expect(sb.counters['storage/uploadScanFile']).toBe(1);
  });
});
