import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { icapSchema } from '../../../../src/config/icap.js';
import type { Logger } from '../../../../src/core/logger.js';
import type { Finding } from '../../../../src/core/outcome.js';
import { FileMessage } from '../../../../src/mime/spool.js';
import { IcapScanner } from '../../../../src/sandbox/icap/scanner.js';
import { IcapThreats } from '../../../../src/sandbox/icap/verdict.js';
import { recorder } from '../../../support/recording-logger.js';
import { FakeIcap, type FakeIcapOptions, type InfectionForm } from '../../../fakes/fake-icap.js';
import { closedPort, ctxFor, EICAR, eml, message, WALK_LIMITS } from '../clamd/helpers.js';

const fakes: FakeIcap[] = [];
const scanners: IcapScanner[] = [];
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sandgate-icap-'));
});

afterEach(async () => {
  for (const s of scanners.splice(0)) await s.close();
  for (const f of fakes.splice(0)) await f.close();
  rmSync(dir, { recursive: true, force: true });
});

async function fake(options: FakeIcapOptions = {}): Promise<FakeIcap> {
  const f = await FakeIcap.start(options);
  fakes.push(f);
  return f;
}

function scanner(
  config: Record<string, unknown>,
  extra: { now?: () => number; ca?: Buffer; log?: Logger } = {},
): IcapScanner {
  const s = new IcapScanner({
    config: icapSchema.parse({ healthInterval: 0, connectTimeout: '1s', timeout: '5s', ...config }),
    walk: { spoolDir: join(dir, 'parts'), limits: WALK_LIMITS },
    ...extra,
  });
  scanners.push(s);
  return s;
}

function expectFailed(f: Finding, reason: string): void {
  expect(f).toMatchObject({ kind: 'failed', reason });
}

describe('IcapScanner against a fake ICAP server', () => {
  it('204 is clean, EICAR is malicious with the threat name; one kept-alive connection carries OPTIONS and both', async () => {
    const f = await fake();
    const s = scanner({ servers: [f.url] });
    expect(await s.scan(message(eml('hello')), ctxFor(5000))).toMatchObject({
      kind: 'clean',
      details: { status: 204, istag: 'FAKE-1', server: f.url },
    });
    expect(await s.scan(message(eml(EICAR)), ctxFor(5000))).toMatchObject({
      kind: 'malicious',
      threats: ['Eicar-Test-Signature'],
    });
    expect(f.counts).toMatchObject({ connections: 1, OPTIONS: 1, RESPMOD: 2 });
    expect(f.requests[1]?.body.toString()).toBe(eml('hello'));
    await s.close();
    await f.allClosed();
  });

  it.each<[InfectionForm, string]>([
    ['x-infection-found', 'Win.Test.A'],
    ['x-virus-id', 'Win.Test.A'],
    ['x-violations-found', 'Win.Test.A'],
    ['x-blocked', IcapThreats.blocked],
    ['x-blocked-reason', 'Win.Test.A'],
    ['x-response-info', 'Win.Test.A'],
    ['block-page', IcapThreats.blocked],
    ['replaced', IcapThreats.replaced],
  ])('infection reported as %s: malicious (%s)', async (form, threat) => {
    const f = await fake({ behavior: { kind: 'scan', form, threat: 'Win.Test.A' } });
    const s = scanner({ servers: [f.url] });
    expect(await s.scan(message(eml(EICAR)), ctxFor(5000))).toMatchObject({
      kind: 'malicious',
      threats: [threat],
    });
    // The connection stays in step: the next scan on it is answered right.
    expect((await s.scan(message(eml('fine')), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.connections).toBe(1);
  });

  it('a configured infection header: malicious with its value; without the setting the block page still blocks', async () => {
    const f = await fake({ behavior: { kind: 'scan', form: { header: 'X-Vendor-Threat: Trojan.Z' } } });
    expect(
      await scanner({ servers: [f.url], infectionHeaders: ['X-Vendor-Threat'] }).scan(
        message(EICAR),
        ctxFor(5000),
      ),
    ).toMatchObject({ kind: 'malicious', threats: ['Trojan.Z'] });
    expect(await scanner({ servers: [f.url] }).scan(message(EICAR), ctxFor(5000))).toMatchObject({
      kind: 'malicious',
      threats: [IcapThreats.blocked],
    });
  });

  it('a 200 echo of the same bytes is clean; a 200 with part of them is failed(protocol)', async () => {
    const body = Buffer.alloc(300_000, 0x61);
    const f = await fake({ behavior: { kind: 'echo' } });
    const s = scanner({ servers: [f.url] });
    expect(await s.scan(message(body), ctxFor(5000))).toMatchObject({
      kind: 'clean',
      details: { status: 200 },
    });
    f.behavior = { kind: 'partial', bytes: 15_000 };
    const partial = await s.scan(message(body), ctxFor(5000));
    expectFailed(partial, 'protocol');
    expect(partial.details).toMatchObject({ bytesReturned: 15_000 });
    // Even a body that differs only in its last byte is not an echo.
    f.behavior = { kind: 'echo' };
    const other = Buffer.from(body);
    const fakeEcho = await fake({ behavior: { kind: 'partial', bytes: 299_999 } });
    expectFailed(await scanner({ servers: [fakeEcho.url] }).scan(message(other), ctxFor(5000)), 'protocol');
  });

  it('a 200 echo cut off by a closed connection is failed(protocol), and the next scan gets a new connection', async () => {
    const f = await fake({ behavior: { kind: 'cut', bytes: 1000 } });
    const s = scanner({ servers: [f.url] });
    expectFailed(await s.scan(message(Buffer.alloc(5000, 0x62)), ctxFor(5000)), 'protocol');
    f.behavior = { kind: 'scan' };
    expect((await s.scan(message('ok'), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.connections).toBe(2);
  });

  it.each([
    ['garbage', 'hello there\r\n\r\n'],
    ['a 200 without Encapsulated', 'ICAP/1.0 200 OK\r\nISTag: "x"\r\n\r\n'],
    ['a bad chunk', 'ICAP/1.0 200 OK\r\nEncapsulated: res-body=0\r\n\r\nxyz\r\n'],
    ['an HTTP answer', 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['a 204 with a body', 'ICAP/1.0 204 No Content\r\nEncapsulated: res-body=0\r\n\r\n0\r\n\r\n'],
    [
      'a 206',
      'ICAP/1.0 206 Partial\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n0\r\n\r\n',
    ],
  ])('malformed reply (%s): failed(protocol), never clean', async (_name, reply) => {
    const f = await fake({ behavior: { kind: 'raw', reply } });
    expectFailed(await scanner({ servers: [f.url] }).scan(message(eml('x')), ctxFor(5000)), 'protocol');
  });

  it('a server that hangs after the preview: failed(timeout) by the deadline, the socket closed', async () => {
    const f = await fake({ behavior: { kind: 'hang-after-preview' }, preview: 10 });
    const s = scanner({ servers: [f.url], timeout: '30s', preview: true });
    const t0 = Date.now();
    const r = await s.scan(message(Buffer.alloc(5000, 0x63)), ctxFor(700));
    expectFailed(r, 'timeout');
    expect(r.kind === 'failed' && r.message).toMatch(/after the preview/);
    expect(Date.now() - t0).toBeLessThan(2500);
    await f.allClosed();
  });

  it('preview: 100 Continue, then the rest; the whole body in the preview ends with ieof and no 100', async () => {
    const f = await fake({ preview: 16 });
    const s = scanner({ servers: [f.url], preview: true });
    const big = Buffer.from(`${'x'.repeat(40)}${EICAR}`);
    expect((await s.scan(message(big), ctxFor(5000))).kind).toBe('malicious');
    expect(f.counts.continues).toBe(1);
    expect(f.requests.at(-1)).toMatchObject({ preview: 16, ieof: false });
    expect(f.requests.at(-1)?.body).toEqual(big);
    // Byte for byte: head, a 16-byte chunk, "0", then the rest in one chunk and "0".
    const raw = f.requests.at(-1)!.raw.toString('latin1');
    const after = raw.slice(raw.indexOf('\r\n\r\n') + 4);
    const http = after.slice(0, after.lastIndexOf('\r\n\r\n', after.indexOf('10\r\n')) + 4);
    expect(after.slice(http.length)).toBe(
      `10\r\n${big.subarray(0, 16).toString('latin1')}\r\n0\r\n\r\n` +
        `${(big.length - 16).toString(16)}\r\n${big.subarray(16).toString('latin1')}\r\n0\r\n\r\n`,
    );
    const small = Buffer.from('short');
    expect((await s.scan(message(small), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.continues).toBe(1);
    expect(f.requests.at(-1)).toMatchObject({ preview: 5, ieof: true });
    expect(f.requests.at(-1)!.raw.toString('latin1')).toMatch(/\r\n5\r\nshort\r\n0; ieof\r\n\r\n$/);
  });

  it('a 100 Continue after ieof is ignored and the final answer still counts', async () => {
    const f = await fake({ behavior: { kind: 'continue-after-ieof' } });
    const s = scanner({ servers: [f.url], preview: true });
    expect((await s.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect((await s.scan(message('fine'), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.continues).toBe(2);
  });

  it('a 204 in answer to the preview is clean; a 204 before the body outside a preview is failed(protocol)', async () => {
    const f = await fake({ behavior: { kind: 'preview-204' }, preview: 8 });
    expect(
      (
        await scanner({ servers: [f.url], preview: true }).scan(
          message(Buffer.alloc(100, 0x61)),
          ctxFor(5000),
        )
      ).kind,
    ).toBe('clean');
    expect(f.counts.continues).toBe(0);
    expect(f.requests.at(-1)).toMatchObject({ preview: 8, ieof: false });
    expect(f.requests.at(-1)?.body.length).toBe(8);
    const g = await fake({ behavior: { kind: '204-early' }, preview: null });
    expectFailed(
      await scanner({ servers: [g.url] }).scan(message(Buffer.alloc(4 << 20, 0x61)), ctxFor(5000)),
      'protocol',
    );
  });

  it('preview off (the default): the whole body at once, no Preview header, although the service offers one', async () => {
    const f = await fake({ preview: 1024 });
    await scanner({ servers: [f.url] }).scan(message('abc'), ctxFor(5000));
    expect(f.requests.at(-1)?.preview).toBeUndefined();
    expect(f.requests.at(-1)!.raw.toString('latin1')).toMatch(/\r\n3\r\nabc\r\n0\r\n\r\n$/);
  });

  it('Max-Connections: 1 — eight scans at once never open a second connection, each gets its own answer', async () => {
    const f = await fake({ maxConnections: 1 });
    const s = scanner({ servers: [f.url], maxConnections: 8 });
    await s.checkHealth();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        s.scan(message(i % 2 === 0 ? eml(`clean ${i}`) : EICAR, `m${i}`), ctxFor(5000)),
      ),
    );
    expect(results.map((r) => r.kind)).toEqual(
      Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 'clean' : 'malicious')),
    );
    expect(f.counts.maxConcurrent).toBe(1);
    expect(f.counts.connections).toBe(1);
  });

  it('our own maxConnections caps connections when the service sets none', async () => {
    const f = await fake({ behavior: { kind: 'echo' } });
    const s = scanner({ servers: [f.url], maxConnections: 2 });
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => s.scan(message(Buffer.alloc(200_000, i)), ctxFor(5000))),
    );
    expect(f.counts.maxConcurrent).toBeLessThanOrEqual(2);
  });

  it('Connection: close is honoured: a new connection for each request, answers still right', async () => {
    const f = await fake({ closeAfterEach: true });
    const s = scanner({ servers: [f.url] });
    expect((await s.scan(message('a'), ctxFor(5000))).kind).toBe('clean');
    expect((await s.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect((await s.scan(message('b'), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.connections).toBe(4);
  });

  it('an echo followed at once by Connection: close is still read whole and compared: clean', async () => {
    const f = await fake({ behavior: { kind: 'echo' }, closeAfterEach: true });
    const s = scanner({ servers: [f.url], maxObjectSize: '50M' });
    // From a file, so comparing the echo takes many turns of the event loop while the close arrives.
    const file = join(dir, 'big.eml');
    writeFileSync(file, randomBytes(6 << 20));
    const msg = new FileMessage('m1', { sender: '', recipients: ['b@test.local'], frontEnd: 'cli' }, file);
    for (let i = 0; i < 3; i++) {
      expect(await s.scan(msg, ctxFor(10_000))).toMatchObject({ kind: 'clean', details: { status: 200 } });
    }
  });

  it('a kept-alive connection the server dropped is replaced, never read as clean', async () => {
    const f = await fake();
    const s = scanner({ servers: [f.url] });
    expect((await s.scan(message('a'), ctxFor(5000))).kind).toBe('clean');
    f.dropConnections();
    expect((await s.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect(f.counts.connections).toBe(2);
  });

  it('a kept-alive connection closed when the next request arrives is retried once on a new one', async () => {
    const f = await fake();
    const rec = recorder('debug');
    const s = scanner({ servers: [f.url] }, { log: rec.root });
    expect((await s.scan(message('a'), ctxFor(5000))).kind).toBe('clean');
    f.closeNextReused = true;
    expect((await s.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect(f.counts.connections).toBe(2);
    expect(f.counts.RESPMOD).toBe(2);
    expect(rec.lines.filter((l) => l.event === 'icap.stale_connection')).toHaveLength(1);
  });

  it('fails over from a refused address and a 500 to a working server, then reports failed(unavailable)', async () => {
    const broken = await fake({
      behavior: { kind: 'status', status: 500, reason: 'Server error', close: true },
    });
    const good = await fake();
    const dead = `icap://127.0.0.1:${await closedPort()}/avscan`;
    const s = scanner({ servers: [dead, broken.url, good.url] });
    expect(await s.scan(message(EICAR), ctxFor(5000))).toMatchObject({
      kind: 'malicious',
      details: { server: good.url },
    });
    expect(s.status().map((x) => x.up)).toEqual([false, false, true]);
    await good.close();
    const r = await s.scan(message(EICAR), ctxFor(5000));
    expectFailed(r, 'unavailable');
    expect(r.kind === 'failed' && r.message).toMatch(/ECONNREFUSED.*500 Server error.*ECONNREFUSED/);
  });

  it('a wrong service path: failed(protocol) naming the path; a REQMOD-only service gets REQMOD', async () => {
    const f = await fake({ service: '/other' });
    const r = await scanner({ servers: [f.url.replace('/other', '/avscan')] }).scan(
      message('x'),
      ctxFor(5000),
    );
    expectFailed(r, 'protocol');
    expect(r.kind === 'failed' && r.message).toMatch(/OPTIONS answered 404/);
    const req = await fake({ methods: 'REQMOD' });
    expect((await scanner({ servers: [req.url] }).scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect(req.counts).toMatchObject({ REQMOD: 1, RESPMOD: 0 });
    expect(req.requests.at(-1)?.encapsulatedHeaders).toMatch(/^POST \/m1\.eml HTTP\/1\.1\r\n/);
    expectFailed(
      await scanner({ servers: [req.url], method: 'respmod' }).scan(message('x'), ctxFor(5000)),
      'protocol',
    );
  });

  it('content of maxObjectSize bytes or more is failed(too-large) before anything is sent (c-icap skips that size)', async () => {
    const f = await fake();
    const s = scanner({ servers: [f.url], maxObjectSize: '1k' });
    expectFailed(await s.scan(message(Buffer.alloc(1024)), ctxFor(5000)), 'too-large');
    expect(f.counts.RESPMOD + f.counts.connections).toBe(0);
    expect((await s.scan(message(Buffer.alloc(1023)), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.RESPMOD).toBe(1);
  });

  it('one deadline per call, never past the message deadline', async () => {
    const f = await fake({ behavior: { kind: 'hang' } });
    const s = scanner({ servers: [f.url], timeout: '300ms' });
    let t0 = Date.now();
    expectFailed(await s.scan(message('x'), ctxFor(10_000)), 'timeout');
    expect(Date.now() - t0).toBeLessThan(1500);
    const long = scanner({ servers: [f.url], timeout: '60s' });
    t0 = Date.now();
    expectFailed(await long.scan(message('x'), ctxFor(400)), 'timeout');
    expect(Date.now() - t0).toBeLessThan(1500);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    expectFailed(await long.scan(message('x'), ctxFor(10_000, { signal: ac.signal })), 'timeout');
  });

  it('Transfer-Complete: a listed extension goes without a preview', async () => {
    const f = await fake({ optionsHeaders: ['Transfer-Complete: exe'] });
    const s = scanner({ servers: [f.url], granularity: 'parts', preview: true });
    const msg = eml('see attached', { name: 'setup.exe', bytes: Buffer.from('MZ....') });
    expect((await s.scan(message(msg), ctxFor(5000))).kind).toBe('clean');
    const exe = f.requests.find((r) => r.encapsulatedHeaders.includes('setup.exe'));
    expect(exe?.preview).toBeUndefined();
    const text = f.requests.find(
      (r) => r.method === 'RESPMOD' && !r.encapsulatedHeaders.includes('setup.exe'),
    );
    expect(text?.preview).toBeDefined();
  });

  it('parts: each decoded part with its name and type; EICAR in an attachment is malicious', async () => {
    const f = await fake();
    const s = scanner({ servers: [f.url], granularity: 'parts' });
    const msg = eml('see attached', { name: 'eicar.com', bytes: Buffer.from(EICAR) });
    expect(await s.scan(message(msg), ctxFor(5000))).toMatchObject({
      kind: 'malicious',
      threats: ['Eicar-Test-Signature'],
    });
    const sent = f.requests.filter((r) => r.method === 'RESPMOD');
    expect(sent.map((r) => r.body.toString())).toEqual(['see attached', EICAR]);
    expect(sent[1]?.encapsulatedHeaders).toContain('GET /eicar.com HTTP/1.1\r\n');
    expect(sent[1]?.encapsulatedHeaders).toContain(
      'Content-Type: application/octet-stream\r\nContent-Length: 68\r\nContent-Disposition: attachment; filename="eicar.com"\r\n',
    );
    expect(sent[0]?.encapsulatedHeaders).toContain('Content-Type: text/plain\r\n');
  });

  it('version() is the ISTag; a response with a new ISTag refreshes OPTIONS; the fingerprint never holds it', async () => {
    const f = await fake({ istag: 'DB-100' });
    const s = scanner({ servers: [f.url] });
    const fp = await s.fingerprint();
    expect(await s.version(AbortSignal.timeout(2000))).toBe('DB-100');
    f.istag = 'DB-101';
    await s.scan(message('x'), ctxFor(5000));
    expect(await s.version(AbortSignal.timeout(2000))).toBe('DB-101');
    expect(f.counts.OPTIONS).toBe(2);
    expect(await s.fingerprint()).toBe(fp);
    expect(fp).toMatch(/^icap;message;[0-9a-f]{16}$/);
    expect(await scanner({ servers: [f.url], granularity: 'parts' }).fingerprint()).not.toBe(fp);
  });

  it('OPTIONS without an ISTag is not asked again for every response that carries one', async () => {
    const f = await fake({ omitOptionsIstag: true });
    const s = scanner({ servers: [f.url] });
    for (const m of ['a', 'b', 'c']) expect((await s.scan(message(m), ctxFor(5000))).kind).toBe('clean');
    expect(f.counts.OPTIONS).toBe(1);
    expect(await s.version(AbortSignal.timeout(2000))).toBe('none');
  });

  it('OPTIONS again once Options-TTL has run out, not before', async () => {
    let clock = 1_000_000;
    const f = await fake({ ttl: 60 });
    const s = scanner({ servers: [f.url] }, { now: () => clock });
    await s.scan(message('x'), { ...ctxFor(5000), deadline: clock + 5000, now: () => clock });
    await s.scan(message('y'), { ...ctxFor(5000), deadline: clock + 5000, now: () => clock });
    expect(f.counts.OPTIONS).toBe(1);
    clock += 61_000;
    await s.scan(message('z'), { ...ctxFor(5000), deadline: clock + 5000, now: () => clock });
    expect(f.counts.OPTIONS).toBe(2);
  });

  it('version() fails with ERR_SCANNER_UNAVAILABLE when no server answers', async () => {
    const s = scanner({ servers: [`icap://127.0.0.1:${await closedPort()}/avscan`] });
    await expect(s.version(AbortSignal.timeout(2000))).rejects.toMatchObject({
      code: 'ERR_SCANNER_UNAVAILABLE',
    });
  });
});

describe('IcapScanner over TLS (icaps://)', () => {
  it('verifies the certificate: refused without the CA, scans with it, and with insecureSkipVerify', async () => {
    const { execFileSync } = await import('node:child_process');
    const { readFileSync } = await import('node:fs');
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1'].concat([
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ]),
      { stdio: 'ignore' },
    );
    const f = await fake({ tls: { key: readFileSync(key), cert: readFileSync(cert) } });
    expect(f.url).toMatch(/^icaps:\/\//);
    const untrusted = await scanner({ servers: [f.url] }).scan(message(EICAR), ctxFor(5000));
    expectFailed(untrusted, 'unavailable');
    expect(untrusted.kind === 'failed' && untrusted.message).toMatch(/SELF_SIGNED|CERT|VERIFY/);
    const trusted = scanner({ servers: [f.url] }, { ca: readFileSync(cert) });
    expect((await trusted.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
    expect((await trusted.scan(message('fine'), ctxFor(5000))).kind).toBe('clean');
    const insecure = scanner({ servers: [f.url], tls: { insecureSkipVerify: true } });
    expect((await insecure.scan(message(EICAR), ctxFor(5000))).kind).toBe('malicious');
  });
});
