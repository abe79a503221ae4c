import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { strToU8, zipSync } from 'fflate';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { run as icapCommand } from '../../src/cli/commands/icap.js';
import { icapSchema } from '../../src/config/icap.js';
import type { Finding } from '../../src/core/outcome.js';
import { IcapScanner } from '../../src/sandbox/icap/scanner.js';
import { findCIcap, startCIcap, type RealCIcap } from '../support/c-icap.js';
import { runSandgate } from '../support/cli.js';
import {
  CUSTOM_SIGNATURE,
  CUSTOM_TEST_STRING,
  EICAR_TEST_FILE,
  findClamd,
  startClamd,
  type RealClamd,
} from '../support/clamd.js';
import { closedPort, ctxFor, eml, message, WALK_LIMITS } from '../unit/sandbox/clamd/helpers.js';

const installed = findCIcap() !== undefined && findClamd() !== undefined;
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
const EICAR_THREAT = /^Test\.EICAR\.(NDB|HDB)\.UNOFFICIAL$/;

// Locally a machine without c-icap skips; in CI a missing package is a failure (beforeAll throws).
describe.skipIf(!installed && !inCi)('icap scanner against a real c-icap with virus_scan and clamd', () => {
  let clamd: RealClamd;
  /** Debian's virus_scan.conf limits, with the clamd module enabled. */
  let debian: RealCIcap;
  /** The configuration docs/icap.md documents. */
  let documented: RealCIcap;
  let dir: string;
  const scanners: IcapScanner[] = [];
  const extra: Array<{ close(): Promise<void> } | { stop(): Promise<void> }> = [];

  beforeAll(async () => {
    if (!installed) {
      throw new Error(
        'c-icap or clamd is not installed but CI is set: .ci/run must `apt-get install -y c-icap libc-icap-mod-virus-scan clamav-daemon` before the tests',
      );
    }
    dir = mkdtempSync(join(tmpdir(), 'sandgate-icap-it-'));
    clamd = await startClamd();
    [debian, documented] = await Promise.all([
      startCIcap({ clamdPort: clamd.port, profile: 'debian' }),
      startCIcap({ clamdPort: clamd.port, profile: 'documented' }),
    ]);
  });

  // Each kept-alive connection holds a c-icap thread (2 processes x 16 here): close them per test.
  afterEach(async () => {
    for (const s of scanners.splice(0)) await s.close();
  });

  afterAll(async () => {
    for (const e of extra) await ('close' in e ? e.close() : e.stop());
    await Promise.all([debian?.close(), documented?.close()]);
    await clamd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function scanner(config: Record<string, unknown>): IcapScanner {
    const s = new IcapScanner({
      config: icapSchema.parse({ healthInterval: 0, timeout: '20s', ...config }),
      walk: { spoolDir: join(dir, 'parts'), limits: WALK_LIMITS },
    });
    scanners.push(s);
    return s;
  }

  const zipWithEicar = (): Buffer => Buffer.from(zipSync({ 'docs/eicar.com': strToU8(EICAR_TEST_FILE) }));
  const infected = (f: Finding): void =>
    expect(f).toMatchObject({ kind: 'malicious', threats: [expect.stringMatching(EICAR_THREAT)] });

  const cases: Array<[string, () => string | Buffer, (f: Finding) => void]> = [
    [
      'a clean message',
      () => eml('Hello, nothing to see here.'),
      (f) => expect(f).toMatchObject({ kind: 'clean' }),
    ],
    [
      'EICAR in a base64 attachment',
      () => eml('see attached', { name: 'eicar.com', bytes: Buffer.from(EICAR_TEST_FILE) }),
      infected,
    ],
    ['EICAR in a zip attachment', () => eml('zipped', { name: 'docs.zip', bytes: zipWithEicar() }), infected],
    [
      'the custom test string in the body: its threat name passed through',
      () => eml(`Quarterly numbers ${CUSTOM_TEST_STRING} attached`),
      (f) => expect(f).toMatchObject({ kind: 'malicious', threats: [`${CUSTOM_SIGNATURE}.UNOFFICIAL`] }),
    ],
  ];

  for (const method of ['respmod', 'reqmod'] as const) {
    for (const granularity of ['message', 'parts'] as const) {
      for (const preview of [false, true]) {
        it.each(cases)(
          `%s (${method}, ${granularity}${preview ? ', preview' : ''})`,
          async (_name, make, check) => {
            const s = scanner({ servers: [documented.url('avscan')], granularity, method, preview });
            const f = await s.scan(message(make()), ctxFor(20_000));
            check(f);
            expect(f.details).toMatchObject({ istag: expect.stringMatching(/^CI0001-/) });
          },
        );
      }
    }
  }

  it("the same verdicts through Debian's avscan alias, and its 204 has no Encapsulated", async () => {
    const s = scanner({ servers: [debian.url('avscan')] });
    expect(await s.scan(message(eml('hello')), ctxFor(20_000))).toMatchObject({
      kind: 'clean',
      details: { status: 204 },
    });
    infected(
      await s.scan(
        message(eml('x', { name: 'eicar.com', bytes: Buffer.from(EICAR_TEST_FILE) })),
        ctxFor(20_000),
      ),
    );
  });

  it('a 6 MB message with EICAR at the end is never clean: Debian limits -> failed(too-large), documented -> malicious', async () => {
    const big = eml(`${'All work and no play. '.repeat((6 * 1024 * 1024) / 22)}\r\n${EICAR_TEST_FILE}`);
    expect(big.length).toBeGreaterThan(6 * 1024 * 1024);
    for (const service of ['avscan', 'srv_clamav', 'virus_scan']) {
      const f = await scanner({ servers: [debian.url(service)] }).scan(message(big), ctxFor(30_000));
      expect(f).toMatchObject({ kind: 'failed', reason: 'too-large' });
    }
    infected(
      await scanner({ servers: [documented.url()], maxObjectSize: '25M' }).scan(message(big), ctxFor(30_000)),
    );
  });

  it("Debian's srv_clamav sends part of a 3 MB message before its verdict: failed(protocol), never clean; a clean one is an exact echo", async () => {
    const s = scanner({ servers: [debian.url('srv_clamav')] });
    const text = 'x'
      .repeat(76)
      .concat('\r\n')
      .repeat((3 * 1024 * 1024) / 78);
    const bad = await s.scan(message(eml(`${text}${EICAR_TEST_FILE}`)), ctxFor(30_000));
    expect(bad).toMatchObject({ kind: 'failed', reason: 'protocol' });
    expect(bad.kind === 'failed' && bad.message).toMatch(/part of the content/);
    const good = await s.scan(message(eml(text)), ctxFor(30_000));
    expect(good).toMatchObject({ kind: 'clean', details: { status: 200, httpStatus: 200 } });
  });

  it('a PDF outside the stock ScanFileTypes: Debian answers 204 unscanned, the documented types scan it', async () => {
    const pdf = Buffer.from(`%PDF-1.4\n1 0 obj << >> endobj\n${EICAR_TEST_FILE}\n%%EOF\n`, 'latin1');
    const msg = eml('the report', { name: 'report.pdf', bytes: pdf });
    // The trap docs/icap.md warns about: c-icap skips the type and says 204, which is all sandgate sees.
    expect(
      await scanner({ servers: [debian.url()], granularity: 'parts' }).scan(message(msg), ctxFor(20_000)),
    ).toMatchObject({
      kind: 'clean',
    });
    infected(
      await scanner({ servers: [documented.url()], granularity: 'parts' }).scan(message(msg), ctxFor(20_000)),
    );
    // Whole messages are TEXT to c-icap, so the stock types scan them.
    infected(await scanner({ servers: [debian.url()] }).scan(message(msg), ctxFor(20_000)));
  });

  it('service down: fails over to the next server, then failed(unavailable)', async () => {
    const own = await startCIcap({ clamdPort: clamd.port });
    extra.push(own);
    const s = scanner({ servers: [`icap://127.0.0.1:${await closedPort()}/avscan`, own.url()] });
    infected(await s.scan(message(EICAR_TEST_FILE), ctxFor(20_000)));
    expect(s.status().map((x) => x.up)).toEqual([false, true]);
    await own.stop();
    const f = await s.scan(message(EICAR_TEST_FILE), ctxFor(20_000));
    expect(f).toMatchObject({ kind: 'failed', reason: 'unavailable' });
    expect(f.kind === 'failed' && f.message).toMatch(/ECONNREFUSED/);
  });

  it('c-icap restarted: the kept-alive connection is replaced, no false clean', async () => {
    const own = await startCIcap({ clamdPort: clamd.port });
    extra.push(own);
    const s = scanner({ servers: [own.url()] });
    expect((await s.scan(message(eml('before')), ctxFor(20_000))).kind).toBe('clean');
    expect(s.status()[0]).toMatchObject({ idle: 1 });
    await own.restart();
    infected(await s.scan(message(EICAR_TEST_FILE), ctxFor(20_000)));
    expect((await s.scan(message(eml('after')), ctxFor(20_000))).kind).toBe('clean');
    await own.restart();
    expect((await s.scan(message(eml('again')), ctxFor(20_000))).kind).toBe('clean');
    infected(await s.scan(message(EICAR_TEST_FILE), ctxFor(20_000)));
  });

  it('eight scans at once over kept-alive connections each get their own answer', async () => {
    const s = scanner({ servers: [documented.url()], maxConnections: 4 });
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        s.scan(message(i % 2 === 0 ? eml(`clean ${i}`) : EICAR_TEST_FILE, `m${i}`), ctxFor(20_000)),
      ),
    );
    expect(results.map((r) => r.kind)).toEqual(
      Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 'clean' : 'malicious')),
    );
    expect(s.status()[0]!.connections).toBeLessThanOrEqual(4);
  });

  it("version() is c-icap's ISTag from OPTIONS", async () => {
    expect(await scanner({ servers: [documented.url()] }).version(AbortSignal.timeout(5000))).toMatch(
      /^CI0001-/,
    );
  });

  it('sandgate scan with scan.chain=icap (the built CLI): the threat name of c-icap in the verdict', async () => {
    const file = join(dir, 'eicar.eml');
    writeFileSync(file, eml('see attached', { name: 'eicar.com', bytes: Buffer.from(EICAR_TEST_FILE) }));
    const env = {
      SANDGATE_STATE_DIR: join(dir, 'state'),
      SANDGATE_SCAN__CHAIN: 'icap',
      SANDGATE_SCANNERS__ICAP__SERVERS: documented.url(),
    };
    const bad = await runSandgate(['scan', '--json', file], { cwd: dir, env });
    expect(bad.stderr).toBe('');
    expect(bad.code).toBe(1);
    const json = JSON.parse(bad.stdout) as {
      decision: { verdict: string; threats: string[] };
      outcomes: Array<{ scanner: string; kind: string }>;
    };
    expect(json.decision.verdict).toBe('malicious');
    expect(json.decision.threats).toEqual([expect.stringMatching(EICAR_THREAT)]);
    expect(json.outcomes).toEqual([expect.objectContaining({ scanner: 'icap', kind: 'malicious' })]);
    writeFileSync(file, eml('nothing here'));
    const good = await runSandgate(['scan', file], { cwd: dir, env });
    expect(good.code).toBe(0);
    expect(good.stdout).toMatch(/^verdict\s+clean$/m);
  });

  async function health(servers: string[], yamlExtra = '', args: string[] = []) {
    const file = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(
      file,
      `stateDir: ${dir}\nlog:\n  level: error\nscanners:\n  icap:\n    servers: [${servers.join(', ')}]\n    timeout: 30s\n${yamlExtra}`,
    );
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (c: Buffer) => (out += c.toString()));
    stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await icapCommand(['health', '--config', file, ...args], {
      stdin: new PassThrough(),
      stdout,
      stderr,
      env: {},
      cwd: dir,
    });
    return { code, out, err };
  }

  it('health passes on the documented configuration: OPTIONS, EICAR and a 25M size probe', async () => {
    const r = await health([documented.url()], '    maxObjectSize: 25M\n');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/methods\s+RESPMOD, REQMOD \(using RESPMOD\)/);
    expect(r.out).toMatch(/preview\s+1024/);
    expect(r.out).toMatch(/istag\s+CI0001-/);
    expect(r.out).toMatch(/max-conn\s+not limited/);
    expect(r.out).toMatch(/eicar\s+infected: Test\.EICAR\./);
    expect(r.out).toMatch(/size-probe\s+infected: Test\.EICAR\.\S+ at 26214399 bytes/);
  });

  it("health fails on Debian's srv_clamav: data before the verdict at 5M, skipped above it", async () => {
    const stock = await health([debian.url('srv_clamav')]);
    expect(stock.code).toBe(2);
    expect(stock.err).toMatch(/SendPercentData/);
    const raised = await health([debian.url('srv_clamav')], '    maxObjectSize: 25M\n');
    expect(raised.code).toBe(2);
    expect(raised.err).toMatch(/came back clean: the service skips objects this big.*MaxObjectSize/);
  });

  it('health fails when clamd is stopped, although OPTIONS still answers; scans are failed(unavailable)', async () => {
    const ownClamd = await startClamd();
    extra.push(ownClamd);
    const own = await startCIcap({ clamdPort: ownClamd.port });
    extra.push(own);
    expect((await health([own.url()], '', ['--no-size-probe'])).code).toBe(0);
    await ownClamd.stop();
    const r = await health([own.url()], '', ['--no-size-probe']);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/methods\s+RESPMOD, REQMOD/);
    expect(r.err).toMatch(/failed\(unavailable\).*500.*engine is not.*clamd/);
    const f = await scanner({ servers: [own.url()] }).scan(message(EICAR_TEST_FILE), ctxFor(20_000));
    expect(f).toMatchObject({ kind: 'failed', reason: 'unavailable' });
  });
});
