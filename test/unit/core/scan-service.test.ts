import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { MARK_HEADER } from '../../../src/core/mark.js';
import { cpuOf, type Scanner } from '../../../src/core/scanner.js';
import type { Runtime } from '../../../src/cli/runtime.js';
import { schemaVersion, STATE_DB_FILE } from '../../../src/store/db.js';
import { CountingScanner } from '../../support/counting-scanner.js';
import { CLEAN_MAIL, ENVELOPE, LogCapture, message, startRuntime } from '../../support/runtime.js';
import { tempDir } from '../../support/tmp.js';

const runtimes: Runtime[] = [];
afterEach(async () => {
  while (runtimes.length > 0) await runtimes.pop()?.close();
});
async function start(...args: Parameters<typeof startRuntime>): Promise<Runtime> {
  const rt = await startRuntime(...args);
  runtimes.push(rt);
  return rt;
}
const soon = () => Date.now() + 10_000;

/** The state database's schema version, read without migrating anything. */
function schemaOf(dir: string): number {
  const db = new Database(join(dir, STATE_DB_FILE), { readonly: true });
  try {
    return schemaVersion(db);
  } finally {
    db.close();
  }
}

describe('ScanService', () => {
  it('answers 50 concurrent identical scans with one scanner call', async () => {
    const scanner = new CountingScanner({ delayMs: 100 });
    const rt = await start(tempDir(), [scanner]);
    const results = await Promise.all(
      Array.from({ length: 50 }, () => rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() })),
    );
    expect(scanner.calls).toBe(1);
    expect(results.every((r) => r.decision.action === 'deliver')).toBe(true);
    expect(results.filter((r) => r.outcomes[0]?.cached === false)).toHaveLength(1);
  });

  it('answers a retry that carries an extra Received line from the cache', async () => {
    const scanner = new CountingScanner();
    const rt = await start(tempDir(), [scanner]);
    const first = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    const retry = await rt.evaluator.evaluate(
      message(`Received: from mx2.example.test by relay; Fri, 27 Nov 2026 10:00:00 +0000\r\n${CLEAN_MAIL}`),
      { deadline: soon() },
    );
    // LF line endings (a CommuniGate queue file) are the same content too
    const lf = await rt.evaluator.evaluate(message(CLEAN_MAIL.replace(/\r\n/g, '\n')), { deadline: soon() });
    expect(scanner.calls).toBe(1);
    expect(retry.contentKey).toBe(first.contentKey);
    expect(lf.contentKey).toBe(first.contentKey);
    expect(retry.outcomes[0]?.cached).toBe(true);
  });

  it('scans again when a non-trace header differs', async () => {
    const scanner = new CountingScanner();
    const rt = await start(tempDir(), [scanner]);
    await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    await rt.evaluator.evaluate(message(`X-Other: 1\r\n${CLEAN_MAIL}`), { deadline: soon() });
    expect(scanner.calls).toBe(2);
  });

  it('a hanging scanner gives failed(timeout) within the budget', async () => {
    const scanner = new CountingScanner({ delayMs: 60_000 });
    const rt = await start(tempDir(), [scanner]);
    const started = Date.now();
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: started + 300 });
    const elapsed = Date.now() - started;
    expect(result.outcomes[0]).toMatchObject({ kind: 'failed', reason: 'timeout' });
    expect(result.decision.action).toBe('tempfail');
    expect(elapsed).toBeLessThan(1_000);
  });

  it('stops a hanging local scanner at the deadline, not before, and runs it without the cache', async () => {
    const scanner = new CountingScanner({ local: true, delayMs: 60_000 });
    const rt = await start(tempDir(), [scanner]);
    const started = Date.now();
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: started + 300 });
    const elapsed = Date.now() - started;
    expect(result.outcomes[0]).toMatchObject({ kind: 'failed', reason: 'timeout', cached: false });
    expect(result.decision.action).toBe('tempfail');
    expect(elapsed).toBeGreaterThanOrEqual(300);
    expect(elapsed).toBeLessThan(1_000);
    // A quick local scan answers at once, and a local scanner is asked again each time (no cache).
    const quick = new CountingScanner({ local: true, delayMs: 5 });
    const rt2 = await start(tempDir(), [quick]);
    for (let i = 0; i < 2; i++) {
      const r = await rt2.evaluator.evaluate(message(CLEAN_MAIL), { deadline: Date.now() + 300 });
      expect(r.outcomes[0]).toMatchObject({ kind: 'clean', cached: false });
    }
    expect(quick.calls).toBe(2);
  });

  it('lets a scan finish in the background and answers the retry from the cache', async () => {
    const scanner = new CountingScanner({
      delayMs: 400,
      backgroundMs: 5_000,
      finding: { kind: 'malicious', threats: ['Late.Verdict'] },
    });
    const rt = await start(tempDir(), [scanner]);
    const first = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: Date.now() + 100 });
    expect(first.decision.action).toBe('tempfail');
    await rt.evaluator.settle();
    const retry = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: Date.now() + 100 });
    expect(retry.decision).toMatchObject({ action: 'reject', threats: ['Late.Verdict'] });
    expect(retry.outcomes[0]?.cached).toBe(true);
    expect(scanner.calls).toBe(1);
  });

  it('stops the chain at the first malicious verdict', async () => {
    const first = new CountingScanner({ name: 'a', finding: { kind: 'malicious', threats: ['X'] } });
    const second = new CountingScanner({ name: 'b' });
    const rt = await start(tempDir(), [first, second]);
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    expect(second.calls).toBe(0);
    expect(result.outcomes.map((o) => o.scanner)).toEqual(['a']);
    expect(result.quarantineId).toBe(result.msgId);
    expect(await rt.quarantine.count()).toBe(1);
  });

  it('keeps the cache and the schema across a restart', async () => {
    const dir = tempDir();
    const scanner = new CountingScanner();
    const rt1 = await startRuntime(dir, [scanner]);
    await rt1.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    const version = schemaOf(dir);
    expect(version).toBeGreaterThan(0);
    await rt1.close();
    const rt2 = await start(dir, [scanner]);
    const again = await rt2.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    expect(again.outcomes[0]?.cached).toBe(true);
    expect(scanner.calls).toBe(1);
    expect(schemaOf(dir)).toBe(version);
  });

  it('a new scanner fingerprint does not reuse the cached verdict', async () => {
    const scanner = new CountingScanner();
    const rt = await start(tempDir(), [scanner]);
    await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    scanner.fingerprintValue = 'v2';
    const after = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    expect(after.outcomes[0]?.cached).toBe(false);
    expect(scanner.calls).toBe(2);
  });

  it('does not scan a message over scan.maxMessageSize: failed(too-large) for each scanner, then the policy', async () => {
    const dir = tempDir();
    const now = Date.UTC(2026, 10, 27, 12);
    const remote = new CountingScanner({ name: 'remote' });
    const local = new CountingScanner({ name: 'local', local: true });
    const logs = new LogCapture();
    const rt = await start(dir, [local, remote], {
      now: () => now,
      logs,
      config: { scan: { maxMessageSize: 1024 } },
    });
    const big = message(CLEAN_MAIL + 'x'.repeat(2000));
    const result = await rt.evaluator.evaluate(big, { deadline: now + 10_000 });
    expect(local.calls + remote.calls).toBe(0);
    expect(result.outcomes).toEqual([
      expect.objectContaining({ scanner: 'local', kind: 'failed', reason: 'too-large', cached: false }),
      expect.objectContaining({ scanner: 'remote', kind: 'failed', reason: 'too-large', cached: false }),
    ]);
    expect(result.outcomes[0]).toMatchObject({ message: expect.stringContaining('scan.maxMessageSize') });
    // The default policy for too-large: quarantine, with a copy of the whole message.
    expect(result.decision).toMatchObject({ action: 'quarantine', reason: 'failure:too-large' });
    const item = await rt.quarantine.get(result.quarantineId!);
    expect(item.size).toBe(big.size);
    // The content key is still computed (hashing, not scanning).
    expect(result.contentKey).toMatch(/^[0-9a-f]{64}$/);
    // At the limit the message is scanned as usual.
    const atLimit = message(CLEAN_MAIL + 'y'.repeat(1024 - CLEAN_MAIL.length));
    expect(atLimit.size).toBe(1024);
    const scanned = await rt.evaluator.evaluate(atLimit, { deadline: now + 10_000 });
    expect(scanned.decision.action).toBe('deliver');
    expect(local.calls + remote.calls).toBe(2);
  });

  it('a too-large message whose quarantine copy fails is tempfail, not dropped', async () => {
    const dir = tempDir();
    const now = Date.UTC(2026, 10, 27, 12);
    mkdirSync(join(dir, 'quarantine'), { recursive: true });
    writeFileSync(join(dir, 'quarantine', '2026-11-27'), 'in the way');
    const scanner = new CountingScanner();
    const rt = await start(dir, [scanner], { now: () => now, config: { scan: { maxMessageSize: 1024 } } });
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL + 'x'.repeat(2000)), {
      deadline: now + 10_000,
    });
    expect(scanner.calls).toBe(0);
    expect(result.decision).toMatchObject({ action: 'tempfail', reason: 'quarantine-failed' });
  });

  it('turns a failing quarantine write into tempfail', async () => {
    const dir = tempDir();
    const now = Date.UTC(2026, 10, 27, 12);
    // A file where the day directory should be: every write fails, also as root.
    mkdirSync(join(dir, 'quarantine'), { recursive: true });
    writeFileSync(join(dir, 'quarantine', '2026-11-27'), 'in the way');
    const logs = new LogCapture();
    const scanner = new CountingScanner({ finding: { kind: 'malicious', threats: ['X'] } });
    const rt = await start(dir, [scanner], { now: () => now, logs });
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: now + 10_000 });
    expect(result.decision).toMatchObject({ action: 'tempfail', reason: 'quarantine-failed' });
    expect(result.quarantineId).toBeUndefined();
    expect(logs.events('quarantine.write_failed')).toHaveLength(1);
  });

  it('tempfails a failing scan for the window from first sight, then quarantines', async () => {
    let now = Date.UTC(2026, 10, 27, 12);
    const scanner = new CountingScanner({
      finding: { kind: 'failed', reason: 'unavailable', message: 'down' },
    });
    const rt = await start(tempDir(), [scanner], { now: () => now });
    const first = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: now + 10_000 });
    expect(first.decision.action).toBe('tempfail');
    now += 3 * 3_600_000;
    const retry = await rt.evaluator.evaluate(message(`Received: x\r\n${CLEAN_MAIL}`), {
      deadline: now + 10_000,
    });
    expect(retry.decision.action).toBe('tempfail');
    now += 3_600_000;
    const late = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: now + 10_000 });
    expect(late.decision).toMatchObject({ action: 'quarantine', reason: 'window-expired:unavailable' });
    expect(late.quarantineId).toBeDefined();
    expect(scanner.calls).toBe(3); // failures are never cached
  });

  it('honours a valid mark and refuses forged, replayed and expired ones', async () => {
    let now = Date.now();
    const scanner = new CountingScanner();
    const rt = await start(tempDir(), [scanner], { now: () => now });
    const judged = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: now + 10_000 });
    const mark = judged.headers.find((h) => h.name === MARK_HEADER);
    expect(mark).toBeDefined();
    const marked = `${MARK_HEADER}: ${mark?.value}\r\n${CLEAN_MAIL}`;

    scanner.fingerprintValue = 'v2'; // so a real scan would not hit the cache
    const same = await rt.evaluator.evaluate(message(marked), { deadline: now + 10_000 });
    expect(same.alreadyJudged).toBe(true);
    expect(same.stripHeaders).toEqual(['X-Sandgate-Mark']);
    expect(scanner.calls).toBe(1);

    const replayed = await rt.evaluator.evaluate(
      message(`${MARK_HEADER}: ${mark?.value}\r\n${CLEAN_MAIL.replace('Just text.', 'Other text.')}`),
      { deadline: now + 10_000 },
    );
    expect(replayed.alreadyJudged).toBe(false);
    expect(scanner.calls).toBe(2);

    const forged = marked.replace(/mac=[\w-]+/, 'mac=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    expect((await rt.evaluator.evaluate(message(forged), { deadline: now + 10_000 })).alreadyJudged).toBe(
      false,
    );

    now += 31 * 86_400_000;
    expect((await rt.evaluator.evaluate(message(marked), { deadline: now + 10_000 })).alreadyJudged).toBe(
      false,
    );
  });

  it('bypass skips scanning visibly', async () => {
    const scanner = new CountingScanner();
    const rt = await start(tempDir(), [scanner], {
      config: { bypass: { clientNetworks: ['192.0.2.0/24'] } },
    });
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    expect(scanner.calls).toBe(0);
    expect(result.decision).toMatchObject({ action: 'deliver', verdict: 'unscanned', bypass: 'client' });
    expect(result.headers[0]?.value).toMatch(/^unscanned; reason=bypass:client/);
    const other = await rt.evaluator.evaluate(
      message(CLEAN_MAIL, { ...ENVELOPE, clientAddress: '198.51.100.1' }),
      {
        deadline: soon(),
      },
    );
    expect(other.decision.bypass).toBeUndefined();
    expect(scanner.calls).toBe(1);
  });

  it('monitor mode delivers at once and counts the verdict that would have applied', async () => {
    const scanner = new CountingScanner({ delayMs: 200, finding: { kind: 'malicious', threats: ['X'] } });
    const logs = new LogCapture();
    const rt = await start(tempDir(), [scanner], { config: { scan: { mode: 'monitor' } }, logs });
    const started = Date.now();
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    expect(Date.now() - started).toBeLessThan(150);
    expect(result.decision).toMatchObject({ action: 'deliver', reason: 'monitor' });
    expect(result.headers[0]?.value).toMatch(/^unscanned; reason=monitor/);
    await rt.evaluator.settle();
    expect(logs.events('monitor.verdict')[0]).toMatchObject({ wouldBe: 'reject' });
    const metrics = await rt.metrics.registry.getSingleMetricAsString('sandgate_monitor_would_be_total');
    expect(metrics).toContain('action="reject"} 1');
  });

  it('a message waiting on a remote scanner holds no CPU slot: others are scanned meanwhile', async () => {
    // One CPU slot; each message waits 600 ms on a remote peer. Holding the slot for the whole
    // chain (the old way) serialised them: 3 messages took 1.8 s.
    const remote = new CountingScanner({ delayMs: 600 });
    const local = new CountingScanner({ name: 'local', local: true });
    const rt = await start(tempDir(), [local, remote], { config: { scan: { concurrency: 1 } } });
    const started = Date.now();
    const results = await Promise.all(
      [1, 2, 3].map((i) =>
        rt.evaluator.evaluate(message(CLEAN_MAIL.replace('Just text.', `Text ${i}.`)), { deadline: soon() }),
      ),
    );
    expect(results.map((r) => r.decision.action)).toEqual(['deliver', 'deliver', 'deliver']);
    expect(Date.now() - started).toBeLessThan(1_400);
    expect(remote.calls).toBe(3);
  });

  it('remote scanners take a CPU slot for their CPU phases through ctx.cpu', async () => {
    let inPhase = 0;
    let most = 0;
    const cpuBound: Scanner = {
      name: 'cpu-phase',
      backgroundMs: 0,
      fingerprint: () => Promise.resolve('v1'),
      scan: async (_m, ctx) => {
        await cpuOf(ctx).run(async () => {
          most = Math.max(most, ++inPhase);
          await new Promise((r) => setTimeout(r, 50));
          inPhase--;
        });
        // The wait on the peer, outside the slot.
        await new Promise((r) => setTimeout(r, 100));
        return { kind: 'clean' };
      },
    };
    const rt = await start(tempDir(), [cpuBound], { config: { scan: { concurrency: 2 } } });
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        rt.evaluator.evaluate(message(CLEAN_MAIL.replace('Just text.', `Phase ${i}.`)), { deadline: soon() }),
      ),
    );
    expect(most).toBe(2);
  });

  it('fail-open delivers with a header saying the message went unscanned, and counts it', async () => {
    const scanner = new CountingScanner({
      finding: { kind: 'failed', reason: 'unavailable', message: 'down' },
    });
    const rt = await start(tempDir(), [scanner], {
      config: { policy: { failure: { unavailable: 'deliver' } } },
    });
    const result = await rt.evaluator.evaluate(message(CLEAN_MAIL), { deadline: soon() });
    expect(result.decision).toMatchObject({ action: 'deliver', failOpen: true });
    expect(result.headers.find((h) => h.name === 'X-Sandgate-Verdict')?.value).toMatch(/^unscanned;/);
    expect(result.headers.some((h) => h.name === MARK_HEADER)).toBe(false);
    expect(await rt.metrics.registry.getSingleMetricAsString('sandgate_fail_open_total')).toContain('} 1');
  });
});
