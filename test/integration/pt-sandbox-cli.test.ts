import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/commands/sandbox.js';
import { FAKE_PT_TOKEN, startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';

let sb: FakePtSandbox;
let dir: string;

beforeAll(async () => {
  sb = await startFakePtSandbox();
  dir = mkdtempSync(join(tmpdir(), 'sg-ptcli-'));
});
afterAll(async () => {
  await sb.close();
  rmSync(dir, { recursive: true, force: true });
});

async function health(url: string, token: string | undefined, extra: string[] = [], yamlExtra = '') {
  const file = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    `stateDir: ${dir}\nlog:\n  level: warn\nscanners:\n  ptSandbox:\n    url: ${url}\n    tokenEnv: PT_TOKEN\n    connectTimeout: 1s\n    retries:\n      attempts: 1\n${yamlExtra}`,
  );
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => (out += c.toString()));
  stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await run(['health', '--config', file, ...extra], {
    stdin: new PassThrough(),
    stdout,
    stderr,
    env: token === undefined ? {} : { PT_TOKEN: token },
    cwd: dir,
  });
  return { code, out, err };
}

describe('sandgate sandbox health', () => {
  it('reports health, version and the token, and lists images', async () => {
    const r = await health(sb.url, FAKE_PT_TOKEN, ['--images']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/health\s+OK/);
    expect(r.out).toMatch(/version\s+5\.11\.0\.12345/);
    expect(r.out).toMatch(/token\s+accepted for analysis mode/);
    expect(r.out).toContain('win10-1607-x64');
  });

  it('--json prints the report as JSON', async () => {
    const r = await health(sb.url, FAKE_PT_TOKEN, ['--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ health: 'OK', version: '5.11.0.12345' });
  });

  it('a wrong token: exit 2, says to check the token, never prints it', async () => {
    const r = await health(sb.url, 'not-the-token-XYZ');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/refused the token \(HTTP 401\).*PT_TOKEN/);
    expect(r.err).toContain('[ERR_SCANNER_UNAVAILABLE]');
    expect(r.out + r.err).not.toContain('not-the-token-XYZ');
  });

  it('a token without the permission for source mode: names the permission', async () => {
    const limited = await startFakePtSandbox({ tokens: { [FAKE_PT_TOKEN]: ['analysis'] } });
    try {
      const r = await health(limited.url, FAKE_PT_TOKEN, [], '    mode: source\n');
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/lacks a permission \(HTTP 403\).*check with source settings/);
    } finally {
      await limited.close();
    }
  });

  it('no token: says which variable to set', async () => {
    const r = await health(sb.url, undefined);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/PT_TOKEN/);
    expect(r.err).toContain('[ERR_CONFIG_INVALID]');
  });

  it('an unreachable address: says to check the address', async () => {
    const gone = await startFakePtSandbox();
    const url = gone.url;
    await gone.close();
    const r = await health(url, FAKE_PT_TOKEN);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cannot reach .*ECONNREFUSED.*check the address/);
  });
});

describe('TLS', () => {
  it('verifies the certificate by default; caFile makes it work; insecureSkipVerify warns', async () => {
    const { execFileSync } = await import('node:child_process');
    const { readFileSync } = await import('node:fs');
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const tls = await startFakePtSandbox({ tls: { key: readFileSync(key), cert: readFileSync(cert) } });
    try {
      const untrusted = await health(tls.url, FAKE_PT_TOKEN);
      expect(untrusted.code).toBe(2);
      expect(untrusted.err).toMatch(/certificate of https:\/\/127\.0\.0\.1:\d+ is not trusted .*caFile/);

      const trusted = await health(tls.url, FAKE_PT_TOKEN, [], `    caFile: ${cert}\n`);
      expect(trusted.code).toBe(0);
      expect(trusted.out).toMatch(/tls\s+verified/);

      const insecure = await health(tls.url, FAKE_PT_TOKEN, [], '    insecureSkipVerify: true\n');
      expect(insecure.code).toBe(0);
      const warning = insecure.err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { event?: string });
      expect(warning.map((w) => w.event)).toContain('pt.tls_insecure');
    } finally {
      await tls.close();
    }
  });
});
