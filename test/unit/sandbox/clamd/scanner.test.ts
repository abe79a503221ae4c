import { uuencode } from '../../../support/embedded-specimens.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clamdSchema, type ClamdConfig } from '../../../../src/config/clamd.js';
import { isSandgateError } from '../../../../src/core/errors.js';
import { silentLogger, type Logger } from '../../../../src/core/logger.js';
import type { MessageSource } from '../../../../src/core/message.js';
import type { Finding } from '../../../../src/core/outcome.js';
import { ClamdScanner } from '../../../../src/sandbox/clamd/scanner.js';
import { FakeClamd } from '../../../fakes/fake-clamd.js';
import { closedPort, ctxFor, EICAR, eml, message, WALK_LIMITS } from './helpers.js';

const fakes: FakeClamd[] = [];
const scanners: ClamdScanner[] = [];
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sandgate-clamd-'));
});

afterEach(async () => {
  for (const s of scanners.splice(0)) await s.close();
  for (const f of fakes.splice(0)) await f.close();
  rmSync(dir, { recursive: true, force: true });
});

async function fake(options: Parameters<typeof FakeClamd.start>[0] = {}): Promise<FakeClamd> {
  const f = await FakeClamd.start(options);
  fakes.push(f);
  return f;
}

function scanner(config: Record<string, unknown>, walk = false): ClamdScanner {
  const parsed: ClamdConfig = clamdSchema.parse({
    healthInterval: 0,
    connectTimeout: '1s',
    timeout: '5s',
    ...config,
  });
  const s = new ClamdScanner({
    config: parsed,
    ...(walk
      ? {
          walk: {
            spoolDir: join(dir, 'parts'),
            limits: WALK_LIMITS,
          },
        }
      : {}),
  });
  scanners.push(s);
  return s;
}

function expectFailed(f: Finding, reason: string): void {
  expect(f.kind).toBe('failed');
  if (f.kind === 'failed') expect(f.reason).toBe(reason);
}

describe('ClamdScanner against a fake clamd', () => {
  it('reads stream: OK as clean and FOUND as malicious with the signature, and closes every socket', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address] });
    expect((await s.scan(message(eml('hello')), ctxFor(5000))).kind).toBe('clean');
    const bad = await s.scan(message(eml(EICAR)), ctxFor(5000));
    expect(bad).toMatchObject({ kind: 'malicious', threats: ['Eicar-Test-Signature'] });
    expect(f.counts.INSTREAM).toBe(2);
    expect(f.payloads[0]?.toString()).toBe(eml('hello'));
    await f.allClosed();
    expect(f.openConnections).toBe(0);
  });

  it('sends big messages in chunkSize pieces and clamd sees exactly the bytes', async () => {
    const f = await fake();
    const body = Buffer.alloc(300_000, 0x61);
    const s = scanner({ addresses: [f.address], chunkSize: '16k' });
    expect((await s.scan(message(body), ctxFor(5000))).kind).toBe('clean');
    expect(f.payloads[0]?.equals(body)).toBe(true);
  });

  it('works over a unix socket', async () => {
    const f = await fake({ unixPath: join(dir, 'clamd.sock') });
    const s = scanner({ addresses: [f.address] });
    expect((await s.scan(message(eml(EICAR)), ctxFor(5000))).kind).toBe('malicious');
  });

  it('turns "... ERROR" into failed(protocol) with the text', async () => {
    const f = await fake({ behavior: { kind: 'error', text: "stream: Can't allocate memory ERROR" } });
    const r = await scanner({ addresses: [f.address] }).scan(message('x'), ctxFor(5000));
    expectFailed(r, 'protocol');
    if (r.kind === 'failed') expect(r.message).toContain("Can't allocate memory");
  });

  it('turns clamd\'s "INSTREAM size limit exceeded" into failed(too-large), even while still sending', async () => {
    const f = await fake({ streamMaxLength: 100_000 });
    const s = scanner({ addresses: [f.address], streamMaxLength: '10M' });
    const r = await s.scan(message(Buffer.alloc(3_000_000, 0x62)), ctxFor(5000));
    expectFailed(r, 'too-large');
  });

  it('refuses a message above streamMaxLength before connecting', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address], streamMaxLength: 1000 });
    expectFailed(await s.scan(message(Buffer.alloc(1001, 0x61)), ctxFor(5000)), 'too-large');
    expect(f.counts.connections).toBe(0);
  });

  it('hang: failed(timeout) within the message budget, and the socket is closed', async () => {
    const f = await fake({ behavior: { kind: 'hang' } });
    const s = scanner({ addresses: [f.address], timeout: '30s' });
    const started = Date.now();
    const r = await s.scan(message(eml('hello')), ctxFor(300));
    const took = Date.now() - started;
    expectFailed(r, 'timeout');
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(1000);
    await f.allClosed();
  });

  it('hang: the per-call timeout applies when it is shorter than the deadline', async () => {
    const f = await fake({ behavior: { kind: 'hang' } });
    const started = Date.now();
    const r = await scanner({ addresses: [f.address], timeout: '200ms' }).scan(message('x'), ctxFor(60_000));
    expectFailed(r, 'timeout');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('an aborted signal ends the call with failed(timeout)', async () => {
    const f = await fake({ behavior: { kind: 'hang' } });
    const ac = new AbortController();
    const p = scanner({ addresses: [f.address] }).scan(message('x'), ctxFor(60_000, { signal: ac.signal }));
    setTimeout(() => ac.abort(), 50);
    expectFailed(await p, 'timeout');
    await f.allClosed();
  });

  it('reset mid-stream: failed(protocol), never clean', async () => {
    const f = await fake({ behavior: { kind: 'reset', afterBytes: 50_000 } });
    const r = await scanner({ addresses: [f.address] }).scan(
      message(Buffer.alloc(2_000_000, 0x61)),
      ctxFor(5000),
    );
    expectFailed(r, 'protocol');
    await f.allClosed();
  });

  it.each([
    ['an unknown reply', { kind: 'raw', reply: 'HELLO THERE\0' }],
    ['a reply without its NUL', { kind: 'raw', reply: 'stream: OK' }],
    ['a silent close', { kind: 'raw', reply: '' }],
    ['an endless reply', { kind: 'raw', reply: Buffer.alloc(20_000, 0x41), keepOpen: true }],
    ['binary garbage', { kind: 'raw', reply: Buffer.from([0xff, 0x01, 0x00]) }],
  ] as const)('garbage: %s is failed(protocol)', async (_name, behavior) => {
    const f = await fake({ behavior });
    const r = await scanner({ addresses: [f.address] }).scan(
      message(Buffer.alloc(200_000, 0x61)),
      ctxFor(5000),
    );
    expectFailed(r, 'protocol');
    await f.allClosed();
  });

  it('an OK that arrives while we are still sending is failed(protocol), not clean', async () => {
    const f = await fake({ behavior: { kind: 'early-ok' } });
    // A slow source: the second chunk comes long after clamd's premature answer.
    const slow: MessageSource = {
      msgId: 'slow',
      envelope: { sender: '', recipients: ['b@test.local'], frontEnd: 'cli' },
      size: 20,
      open: () =>
        Readable.from(
          (async function* () {
            yield Buffer.from('0123456789');
            await new Promise((resolve) => setTimeout(resolve, 100));
            yield Buffer.from('0123456789');
          })(),
        ),
    };
    expectFailed(await scanner({ addresses: [f.address] }).scan(slow, ctxFor(5000)), 'protocol');
    await f.allClosed();
  });

  it('first address down: fails over to the second and marks the first down', async () => {
    const down = `127.0.0.1:${await closedPort()}`;
    const f = await fake();
    const s = scanner({ addresses: [down, f.address] });
    expect((await s.scan(message(eml(EICAR)), ctxFor(5000))).kind).toBe('malicious');
    expect(s.status()).toMatchObject([
      { address: down, up: false, lastError: 'ECONNREFUSED' },
      { address: f.address, up: true },
    ]);
    expect((await s.scan(message(eml('hi')), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.INSTREAM).toBe(2);
  });

  it('fails over to a unix socket, and a missing socket file counts as down', async () => {
    const f = await fake({ unixPath: join(dir, 'b.sock') });
    const s = scanner({ addresses: [join(dir, 'missing.sock'), f.address] });
    expect((await s.scan(message('x'), ctxFor(5000))).kind).toBe('clean');
    expect(s.status()[0]).toMatchObject({ up: false, lastError: 'ENOENT' });
  });

  it('all addresses refused: failed(unavailable) naming each', async () => {
    const a = `127.0.0.1:${await closedPort()}`;
    const b = join(dir, 'none.sock');
    const r = await scanner({ addresses: [a, b] }).scan(message('x'), ctxFor(5000));
    expectFailed(r, 'unavailable');
    if (r.kind === 'failed') {
      expect(r.message).toContain(a);
      expect(r.message).toContain(`unix:${b}`);
    }
  });

  it('does not fail over after clamd has accepted the stream (a reset is final)', async () => {
    const f1 = await fake({ behavior: { kind: 'reset', afterBytes: 10 } });
    const f2 = await fake();
    const r = await scanner({ addresses: [f1.address, f2.address] }).scan(
      message(Buffer.alloc(100_000)),
      ctxFor(5000),
    );
    expectFailed(r, 'protocol');
    expect(f2.counts.INSTREAM).toBe(0);
  });

  it('round robin spreads calls; failover keeps to the first', async () => {
    const f1 = await fake();
    const f2 = await fake();
    const rr = scanner({ addresses: [f1.address, f2.address], strategy: 'round-robin' });
    for (let i = 0; i < 6; i++) expect((await rr.scan(message('x'), ctxFor(5000))).kind).toBe('clean');
    expect([f1.counts.INSTREAM, f2.counts.INSTREAM]).toEqual([3, 3]);
    const fo = scanner({ addresses: [f1.address, f2.address], strategy: 'failover' });
    for (let i = 0; i < 4; i++) await fo.scan(message('x'), ctxFor(5000));
    expect([f1.counts.INSTREAM, f2.counts.INSTREAM]).toEqual([7, 3]);
  });

  it('round robin skips an address that is down', async () => {
    const down = `127.0.0.1:${await closedPort()}`;
    const f = await fake();
    const rr = scanner({ addresses: [down, f.address], strategy: 'round-robin', healthInterval: '1h' });
    for (let i = 0; i < 4; i++) expect((await rr.scan(message('x'), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.INSTREAM).toBe(4);
    expect(rr.status()[0]?.up).toBe(false);
  });

  it('a PING health check brings a down address back', async () => {
    const path = join(dir, 'late.sock');
    const other = await fake();
    const s = scanner({ addresses: [path, other.address], healthInterval: '1h' });
    await s.scan(message('x'), ctxFor(5000));
    expect(s.status()[0]?.up).toBe(false);
    const late = await fake({ unixPath: path });
    await s.checkHealth();
    expect(s.status()[0]).toMatchObject({ up: true, version: late.version });
    expect(late.counts.PING).toBe(1);
    await s.scan(message('x'), ctxFor(5000));
    expect(late.counts.INSTREAM).toBe(1);
  });

  it('the background health check (every healthInterval) brings an address back on its own', async () => {
    const path = join(dir, 'later.sock');
    const other = await fake();
    let onUp: (address: unknown) => void = () => undefined;
    const up = new Promise((resolve) => (onUp = resolve));
    const log: Logger = {
      ...silentLogger,
      info: (obj) => {
        if (obj.event === 'clamd.address_up') onUp(obj.address);
      },
      child: () => log,
    };
    const s = new ClamdScanner({
      config: clamdSchema.parse({
        addresses: [path, other.address],
        healthInterval: '50ms',
        connectTimeout: '1s',
      }),
      log,
    });
    scanners.push(s);
    await s.scan(message('x'), ctxFor(5000));
    expect(s.status()[0]?.up).toBe(false);
    const late = await fake({ unixPath: path });
    expect(await up).toBe(`unix:${path}`);
    expect(late.counts.PING).toBeGreaterThanOrEqual(1);
    await s.scan(message('x'), ctxFor(5000));
    expect(late.counts.INSTREAM).toBe(1);
  });

  it('a health check marks an address that does not answer PING as down', async () => {
    const f1 = await fake({ hangCommands: true });
    const f2 = await fake();
    const s = scanner({ addresses: [f1.address, f2.address], healthInterval: '1h', connectTimeout: '200ms' });
    await s.checkHealth();
    expect(s.status().map((m) => m.up)).toEqual([false, true]);
    await s.scan(message('x'), ctxFor(5000));
    expect([f1.counts.INSTREAM, f2.counts.INSTREAM]).toEqual([0, 1]);
  });
});

describe('ClamdScanner fingerprint and version', () => {
  it('the fingerprint is the granularity only; the VERSION answer is version() and follows it', async () => {
    const f = await fake({ version: 'ClamAV 1.4.6/27000/Thu Nov 26 08:00:00 2026' });
    const s = scanner({ addresses: [f.address] });
    expect(await s.fingerprint()).toBe('clamd;message');
    const a = await s.version(AbortSignal.timeout(2000));
    expect(a).toBe('ClamAV 1.4.6/27000/Thu Nov 26 08:00:00 2026');
    f.version = 'ClamAV 1.4.6/27001/Fri Nov 27 08:00:00 2026';
    expect(await s.version(AbortSignal.timeout(2000))).toContain('27001');
    expect(await s.fingerprint()).toBe('clamd;message');
  });

  it('caches VERSION for healthInterval and refreshes it on a health check', async () => {
    const f = await fake({ version: 'ClamAV 1.0.0/1/x' });
    const s = scanner({ addresses: [f.address], healthInterval: '1h' });
    const a = await s.version(AbortSignal.timeout(2000));
    f.version = 'ClamAV 1.0.0/2/y';
    expect(await s.version(AbortSignal.timeout(2000))).toBe(a);
    expect(f.counts.VERSION).toBe(1);
    await s.checkHealth();
    expect(await s.version(AbortSignal.timeout(2000))).not.toBe(a);
  });

  it('fingerprints differ between granularities; version() names every version of a mixed pool', async () => {
    const f1 = await fake({ version: 'ClamAV 1.4.6/1/a' });
    const f2 = await fake({ version: 'ClamAV 1.4.6/2/b' });
    const m = await scanner({ addresses: [f1.address] }).fingerprint();
    const p = await scanner({ addresses: [f1.address], granularity: 'parts' }, true).fingerprint();
    expect(m).not.toBe(p);
    const both = await scanner({ addresses: [f2.address, f1.address] }).version(AbortSignal.timeout(2000));
    expect(both).toBe('ClamAV 1.4.6/1/a|ClamAV 1.4.6/2/b');
  });

  it('version() throws ERR_SCANNER_UNAVAILABLE when no address answers, ERR_SCANNER_TIMEOUT when the signal ends first', async () => {
    const s = scanner({ addresses: [`127.0.0.1:${await closedPort()}`] });
    const err = await s.version(AbortSignal.timeout(2000)).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_SCANNER_UNAVAILABLE')).toBe(true);
    const f = await fake({ hangCommands: true });
    const slow = scanner({ addresses: [f.address], connectTimeout: '5s' });
    const started = Date.now();
    const err2 = await slow.version(AbortSignal.timeout(100)).catch((e: unknown) => e);
    expect(isSandgateError(err2, 'ERR_SCANNER_TIMEOUT')).toBe(true);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('sets a clean TTL cap from the config', () => {
    expect(scanner({ cleanTtlCap: '2h' }).cleanTtlCapMs).toBe(7_200_000);
  });
});

describe('ClamdScanner granularity parts', () => {
  it('sends each decoded part: EICAR in a base64 attachment is found in the decoded bytes', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address], granularity: 'parts' }, true);
    const keys: string[] = [];
    const memo = {
      run: (key: string, compute: () => Promise<Finding>) => {
        keys.push(key);
        return compute();
      },
    };
    const r = await s.scan(
      message(eml('see attached', { name: 'e.com', bytes: Buffer.from(EICAR) })),
      ctxFor(5000, { memo }),
    );
    expect(r).toMatchObject({ kind: 'malicious', threats: ['Eicar-Test-Signature'] });
    expect(f.payloads.map((p) => p.toString())).toContain(EICAR);
    expect(keys.every((k) => /^clamd-part:[0-9a-f]{64}$/.test(k))).toBe(true);
  });

  it('sends a file uuencoded in a text body on its own, decoded', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address], granularity: 'parts' }, true);
    const r = await s.scan(
      message(eml(`see below\r\n${uuencode(Buffer.from(EICAR), 'notes.txt')}`)),
      ctxFor(5000),
    );
    expect(r).toMatchObject({ kind: 'malicious', threats: ['Eicar-Test-Signature'] });
    // The text part first (encoded: no EICAR string in it), then the decoded block, EICAR as it is.
    expect(f.payloads.map((p) => p.toString('latin1') === EICAR)).toEqual([false, true]);
  });

  it('clean parts give clean; a memoised part is not sent again', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address], granularity: 'parts' }, true);
    const cache = new Map<string, Finding>();
    const memo = {
      run: async (key: string, compute: () => Promise<Finding>) => {
        const hit = cache.get(key);
        if (hit) return hit;
        const v = await compute();
        cache.set(key, v);
        return v;
      },
    };
    const msg = eml('hello', { name: 'a.txt', bytes: Buffer.from('just text') });
    expect(await s.scan(message(msg), ctxFor(5000, { memo }))).toMatchObject({
      kind: 'clean',
      details: { parts: 2 },
    });
    expect(f.counts.INSTREAM).toBe(2);
    expect((await s.scan(message(msg, 'm2'), ctxFor(5000, { memo }))).kind).toBe('clean');
    expect(f.counts.INSTREAM).toBe(2);
  });

  it('a part above streamMaxLength is failed(too-large) without sending it', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address], granularity: 'parts', streamMaxLength: 2000 }, true);
    const r = await s.scan(
      message(eml('hi', { name: 'big.bin', bytes: Buffer.alloc(1500, 1) })),
      ctxFor(5000),
    );
    expect(r.kind).toBe('clean');
    const r2 = await s.scan(
      message(eml('hi', { name: 'big.bin', bytes: Buffer.alloc(2500, 1) })),
      ctxFor(5000),
    );
    expectFailed(r2, 'too-large');
    expect(f.payloads.every((p) => p.length <= 2000)).toBe(true);
  });

  it('a message without MIME parts is sent whole', async () => {
    const f = await fake();
    const s = scanner({ addresses: [f.address], granularity: 'parts' }, true);
    expect((await s.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect(f.payloads.map((p) => p.toString())).toEqual([EICAR]);
  });

  it('requires walk options', () => {
    expect(() => scanner({ granularity: 'parts' })).toThrow(/parts/);
  });
});
