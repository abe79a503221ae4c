import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { strToU8, zipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clamdSchema } from '../../src/config/clamd.js';
import type { Finding } from '../../src/core/outcome.js';
import { ClamdScanner } from '../../src/sandbox/clamd/scanner.js';
import {
  CUSTOM_SIGNATURE,
  CUSTOM_TEST_STRING,
  EICAR_TEST_FILE,
  findClamd,
  startClamd,
  type RealClamd,
} from '../support/clamd.js';
import { closedPort, ctxFor, eml, message, WALK_LIMITS } from '../unit/sandbox/clamd/helpers.js';

const installed = findClamd() !== undefined;
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

// Locally a machine without clamd skips; in CI a missing clamd is a failure (beforeAll throws).
describe.skipIf(!installed && !inCi)('clamd scanner against a real clamd', () => {
  let clamd: RealClamd;
  let small: RealClamd;
  let dir: string;
  const scanners: ClamdScanner[] = [];

  beforeAll(async () => {
    if (!installed) {
      throw new Error(
        'clamd is not installed but CI is set: .ci/run must `apt-get install -y clamav-daemon clamdscan` before the tests',
      );
    }
    dir = mkdtempSync(join(tmpdir(), 'sandgate-clamd-it-'));
    // Two daemons: a normal one, and one whose StreamMaxLength is small so clamd itself refuses.
    [clamd, small] = await Promise.all([startClamd(), startClamd({ streamMaxLength: '1M' })]);
  });

  afterAll(async () => {
    for (const s of scanners) await s.close();
    await Promise.all([clamd?.stop(), small?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function scanner(config: Record<string, unknown>): ClamdScanner {
    const s = new ClamdScanner({
      config: clamdSchema.parse({ healthInterval: 0, timeout: '20s', ...config }),
      walk: {
        spoolDir: join(dir, 'parts'),
        limits: WALK_LIMITS,
      },
    });
    scanners.push(s);
    return s;
  }

  const zipWithEicar = (): Buffer => Buffer.from(zipSync({ 'docs/eicar.com': strToU8(EICAR_TEST_FILE) }));

  const cases: Array<[string, () => string | Buffer, (f: Finding) => void]> = [
    ['a clean message', () => eml('Hello, nothing to see here.'), (f) => expect(f.kind).toBe('clean')],
    [
      'raw EICAR',
      () => EICAR_TEST_FILE,
      (f) =>
        expect(f).toMatchObject({ kind: 'malicious', threats: [expect.stringMatching(/^Test\.EICAR\./)] }),
    ],
    [
      'EICAR in a base64 attachment',
      () => eml('see attached', { name: 'eicar.com', bytes: Buffer.from(EICAR_TEST_FILE) }),
      (f) =>
        expect(f).toMatchObject({ kind: 'malicious', threats: [expect.stringMatching(/^Test\.EICAR\./)] }),
    ],
    [
      'EICAR in a zip attachment',
      () => eml('zipped', { name: 'docs.zip', bytes: zipWithEicar() }),
      (f) =>
        expect(f).toMatchObject({ kind: 'malicious', threats: [expect.stringMatching(/^Test\.EICAR\./)] }),
    ],
    [
      'the custom test string in the body',
      () => eml(`Quarterly numbers ${CUSTOM_TEST_STRING} attached`),
      (f) => expect(f).toMatchObject({ kind: 'malicious', threats: [`${CUSTOM_SIGNATURE}.UNOFFICIAL`] }),
    ],
  ];

  for (const transport of ['tcp', 'unix'] as const) {
    for (const granularity of ['message', 'parts'] as const) {
      it.each(cases)(`%s (${transport}, ${granularity})`, async (_name, make, check) => {
        const address = transport === 'tcp' ? clamd.tcpAddress : clamd.socketPath;
        const s = scanner({ addresses: [address], granularity });
        check(await s.scan(message(make()), ctxFor(20_000)));
      });
    }
  }

  it('the raw zip itself is found', async () => {
    const f = await scanner({ addresses: [clamd.tcpAddress] }).scan(message(zipWithEicar()), ctxFor(20_000));
    expect(f.kind).toBe('malicious');
  });

  it('StreamMaxLength exceeded in clamd: failed(too-large), not clean', async () => {
    const s = scanner({ addresses: [small.tcpAddress], streamMaxLength: '10M' });
    const big = Buffer.alloc(3 * 1024 * 1024, 0x61);
    for (let i = 0; i < 5; i++) {
      const f = await s.scan(message(big), ctxFor(20_000));
      expect(f).toMatchObject({ kind: 'failed', reason: 'too-large' });
    }
    // Below the limit the same daemon still answers.
    expect((await s.scan(message(eml('small')), ctxFor(20_000))).kind).toBe('clean');
  });

  it('fails over from a dead address to the real clamd, and reports its VERSION as the version', async () => {
    const s = scanner({ addresses: [`127.0.0.1:${await closedPort()}`, clamd.socketPath] });
    expect((await s.scan(message(EICAR_TEST_FILE), ctxFor(20_000))).kind).toBe('malicious');
    expect(s.status()[0]?.up).toBe(false);
    expect(await s.fingerprint()).toBe('clamd;message');
    expect(await s.version(AbortSignal.timeout(5000))).toMatch(/^ClamAV \d+\.\d+/);
  });

  it('eight scans at once all get their own answer', async () => {
    const s = scanner({ addresses: [clamd.tcpAddress, clamd.socketPath], strategy: 'round-robin' });
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        s.scan(message(i % 2 === 0 ? eml(`clean ${i}`) : EICAR_TEST_FILE, `m${i}`), ctxFor(20_000)),
      ),
    );
    expect(results.map((r) => r.kind)).toEqual(
      Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 'clean' : 'malicious')),
    );
  });
});
