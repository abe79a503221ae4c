import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/icap.js';
import { FakeIcap, type FakeIcapOptions } from '../fakes/fake-icap.js';
import { closedPort } from '../unit/sandbox/clamd/helpers.js';

let dir: string;
const fakes: FakeIcap[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-icapcli-'));
});
afterAll(async () => {
  for (const f of fakes) await f.close();
  rmSync(dir, { recursive: true, force: true });
});

async function fake(o: FakeIcapOptions = {}): Promise<FakeIcap> {
  const f = await FakeIcap.start(o);
  fakes.push(f);
  return f;
}

async function health(servers: string[], yamlExtra = '', args: string[] = []) {
  const file = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    `stateDir: ${dir}\nlog:\n  level: warn\nscanners:\n  icap:\n    servers: [${servers.join(', ')}]\n    connectTimeout: 1s\n    timeout: 3s\n${yamlExtra}`,
  );
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => (out += c.toString()));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await run(['health', '--config', file, ...args], {
    stdin: new PassThrough(),
    stdout,
    stderr,
    env: {},
    cwd: dir,
  });
  return { code, out, err };
}

describe('sandgate icap health', () => {
  it('OPTIONS, EICAR and the size probe pass: exit 0 and the report', async () => {
    const f = await fake({ maxConnections: 4, ttl: 300, istag: 'DB-7' });
    const r = await health([f.url], '    maxObjectSize: 2M\n');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/server\s+icap:\/\/127\.0\.0\.1:\d+\/avscan/);
    expect(r.out).toMatch(/methods\s+RESPMOD, REQMOD \(using RESPMOD\)/);
    expect(r.out).toMatch(/preview\s+1024/);
    expect(r.out).toMatch(/istag\s+DB-7/);
    expect(r.out).toMatch(/max-conn\s+4/);
    expect(r.out).toMatch(/options-ttl\s+300s/);
    expect(r.out).toMatch(/eicar\s+infected: Eicar-Test-Signature/);
    expect(r.out).toMatch(/size-probe\s+infected: Eicar-Test-Signature at 2097151 bytes/);
    expect(r.out).toMatch(/result\s+OK/);
    // The size probe is a zip one byte below maxObjectSize, with EICAR in it.
    const probe = f.requests.find((q) => q.encapsulatedHeaders.includes('size-probe.zip'));
    expect(probe?.body.length).toBe(2 * 1024 * 1024 - 1);
  });

  it('--json prints one report per server; --no-size-probe sends only EICAR', async () => {
    const f = await fake();
    const r = await health([f.url], '', ['--json', '--no-size-probe']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual([
      expect.objectContaining({
        ok: true,
        istag: 'FAKE-1',
        preview: 1024,
        maxConnections: null,
        problems: [],
      }),
    ]);
    expect(f.requests.filter((q) => q.method === 'RESPMOD')).toHaveLength(1);
  });

  it('EICAR comes back clean (an engine that does not scan): exit 2, says what to fix', async () => {
    const f = await fake({ behavior: { kind: 'echo' } });
    const r = await health([f.url]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/eicar\s+clean/);
    expect(r.out).toMatch(/result\s+FAILED/);
    expect(r.err).toMatch(
      /EICAR test file came back clean.*clamd_mod.*SendInfectionFoundICAPHeader.*infectionHeaders/,
    );
  });

  it('the engine behind the service is down (500): exit 2, names the engine', async () => {
    const f = await fake({ behavior: { kind: 'status', status: 500, reason: 'Server error' } });
    const r = await health([f.url]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/methods\s+RESPMOD, REQMOD/);
    expect(r.err).toMatch(/failed\(unavailable\).*500 Server error.*engine is not/);
  });

  it('objects as big as maxObjectSize pass unscanned: the size probe fails and says which limit to raise', async () => {
    // A service that answers 204 to anything of 1 MB or more without looking: c-icap's MaxObjectSize.
    const f = await fake({ behavior: { kind: 'scan', maxObjectSize: 1024 * 1024 } });
    const r = await health([f.url], '    maxObjectSize: 2M\n');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      /zip of 2097151 bytes .* came back clean: the service skips objects this big.*MaxObjectSize/,
    );
  });

  it('a wrong path, a refused port, a REQMOD-only service with method respmod: one line each', async () => {
    const f = await fake({ service: '/av' });
    const g = await fake({ methods: 'REQMOD' });
    const port = await closedPort();
    const r = await health(
      [`icap://127.0.0.1:${f.port}/avscan`, `icap://127.0.0.1:${port}/avscan`, g.url],
      '    method: respmod\n',
    );
    expect(r.code).toBe(2);
    const lines = r.err.split('\n').filter((l) => l.startsWith('sandgate icap health:'));
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/no ICAP service at \/avscan \(OPTIONS answered 404\): check the service path/);
    expect(lines[1]).toMatch(/cannot connect to 127\.0\.0\.1:\d+ \(ECONNREFUSED\): check the host and port/);
    expect(lines[2]).toMatch(/offers REQMOD, not what scanners\.icap\.method \(respmod\) needs/);
  });

  it('icaps:// with an untrusted certificate: says to set tls.caFile; with it the check passes', async () => {
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
    const untrusted = await health([f.url], '', ['--no-size-probe']);
    expect(untrusted.code).toBe(2);
    expect(untrusted.err).toMatch(/TLS handshake with 127\.0\.0\.1:\d+ failed .*tls\.caFile/);
    const trusted = await health([f.url], `    tls:\n      caFile: ${cert}\n`, ['--no-size-probe']);
    expect(trusted.code).toBe(0);
    const insecure = await health([f.url], '    tls:\n      insecureSkipVerify: true\n', ['--no-size-probe']);
    expect(insecure.code).toBe(0);
    const events = insecure.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => (JSON.parse(l) as { event?: string }).event);
    expect(events).toContain('icap.tls_insecure');
  });

  it('no subcommand or an unknown one: usage, exit 2', async () => {
    const stderr = new PassThrough();
    let err = '';
    stderr.on('data', (c: Buffer) => (err += c.toString()));
    const io = { stdin: new PassThrough(), stdout: new PassThrough(), stderr, env: {}, cwd: dir };
    expect(await run([], io)).toBe(2);
    expect(err).toMatch(/usage: sandgate icap health/);
    expect(await run(['status'], io)).toBe(2);
    expect(err).toMatch(/unknown subcommand "status".*\[ERR_CONFIG_INVALID\]/);
  });
});
