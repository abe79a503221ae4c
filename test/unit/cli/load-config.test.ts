import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isSandgateError } from '../../../src/core/errors.js';
import { loadConfig, redactConfig } from '../../../src/cli/load-config.js';
import { tempDir } from '../../support/tmp.js';

function fails(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (isSandgateError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected loadConfig to fail');
}

describe('loadConfig', () => {
  it('gives the documented defaults with no file', () => {
    const { config } = loadConfig({ env: {}, cwd: '/' });
    expect(config.relay.listen).toEqual({ host: '127.0.0.1', port: 10025 });
    expect(config.relay.nextHop).toMatchObject({ host: '127.0.0.1', port: 10026 });
    expect(config.scan.chain).toEqual(['rules']);
    expect(config.policy.tempfailWindow).toBe(4 * 3_600_000);
    expect(config.cache.malicious).toBe(30 * 86_400_000);
    expect(Object.isFrozen(config.scan)).toBe(true);
  });

  it('layers file, environment and --set, later wins', () => {
    const dir = tempDir();
    const file = join(dir, 'sandgate.yaml');
    writeFileSync(
      file,
      'stateDir: /from/file\nscan:\n  deadline: 30s\n  concurrency: 4\nheaders:\n  enabled: true\n',
    );
    const { config } = loadConfig({
      file,
      cwd: dir,
      env: {
        SANDGATE_SCAN__CONCURRENCY: '8',
        SANDGATE_HEADERS__ENABLED: 'false',
        SANDGATE_SCAN__MEMORY_SPOOL_THRESHOLD: '1M',
        SANDGATE_POLICY__FAILURE__TOO_LARGE: 'reject',
        SANDGATE_PT_SANDBOX_TOKEN: 'not-a-config-key', // a secret, not an override: ignored
      },
      sets: ['scan.concurrency=16', 'scan.chain=rules,clamd'],
    });
    expect(config.stateDir).toBe('/from/file');
    expect(config.scan.deadline).toBe(30_000);
    expect(config.scan.concurrency).toBe(16);
    expect(config.headers.enabled).toBe(false); // "false" is false
    expect(config.scan.memorySpoolThreshold).toBe(1024 * 1024);
    expect(config.policy.failure['too-large']).toBe('reject');
    expect(config.scan.chain).toEqual(['rules', 'clamd']);
  });

  it('reads SANDGATE_CONFIG when no --config is given', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'c.yaml'), 'stateDir: ./state\n');
    const loaded = loadConfig({ env: { SANDGATE_CONFIG: 'c.yaml' }, cwd: dir });
    expect(loaded.file).toBe(join(dir, 'c.yaml'));
    expect(loaded.config.stateDir).toBe('./state');
  });

  it('names the path, file and line of a bad or unknown key', () => {
    const dir = tempDir();
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'scan:\n  deadline: soon\n  chain: [rules]\npolicy:\n  malicous: reject\n');
    const err = fails(() => loadConfig({ file, env: {}, cwd: dir }));
    expect(err.code).toBe('ERR_CONFIG_INVALID');
    expect(err.message).toContain(`scan.deadline: not a duration: "soon"`);
    expect(err.message).toContain(`(${file}:2)`);
    expect(err.message).toContain(`policy.malicous: unknown key (${file}:5)`);
  });

  it('names the environment variable of a bad override', () => {
    const err = fails(() => loadConfig({ env: { SANDGATE_SCAN__CONCURRENCY: 'many' }, cwd: '/' }));
    expect(err.code).toBe('ERR_CONFIG_INVALID');
    expect(err.message).toContain('scan.concurrency');
    expect(err.message).toContain('SANDGATE_SCAN__CONCURRENCY');
  });

  it('refuses an unknown nested key from the environment', () => {
    const err = fails(() => loadConfig({ env: { SANDGATE_SCAN__DEADLIEN: '5s' }, cwd: '/' }));
    expect(err.message).toContain('scan.deadlien: unknown key');
  });

  it('reports YAML syntax errors with the line', () => {
    const dir = tempDir();
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'scan:\n  chain: [rules\nstateDir: x\n');
    const err = fails(() => loadConfig({ file, env: {}, cwd: dir }));
    expect(err.code).toBe('ERR_CONFIG_FILE');
    expect(err.message).toMatch(
      new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:\\d+:\\d+: YAML syntax error`),
    );
  });

  it('a missing file is ERR_CONFIG_FILE naming the file', () => {
    const err = fails(() => loadConfig({ file: '/nonexistent/sandgate.yaml', env: {}, cwd: '/' }));
    expect(err.code).toBe('ERR_CONFIG_FILE');
    expect(err.message).toContain('/nonexistent/sandgate.yaml');
  });

  it('redacts secret values but keeps the names of secret files', () => {
    const shown = redactConfig({ a: { password: 'hunter2', passwordFile: '/etc/p', tokenEnv: 'X' } }) as {
      a: Record<string, string>;
    };
    expect(shown.a).toEqual({ password: '[redacted]', passwordFile: '/etc/p', tokenEnv: 'X' });
  });

  it('refuses a bad network entry in any network list, naming the key, the file and the line', () => {
    const dir = tempDir();
    const file = join(dir, 'sandgate.yaml');
    writeFileSync(file, 'relay:\n  trustedPeers:\n    - 127.0.0.1\n    - 10.0.0.0/33\n');
    const f = fails(() => loadConfig({ file, cwd: dir, env: {} }));
    expect(f.code).toBe('ERR_CONFIG_INVALID');
    expect(f.message).toContain(`relay.trustedPeers.1: not an address or CIDR block: "10.0.0.0/33"`);
    expect(f.message).toContain(`${file}:4`);
    for (const [key, value] of [
      ['relay.allowedClients', 'mail.example.org'],
      ['bypass.clientNetworks', '192.0.2.0/24,not-an-ip'],
    ] as const) {
      expect(fails(() => loadConfig({ cwd: dir, env: {}, sets: [`${key}=${value}`] })).message).toMatch(
        new RegExp(`${key.replace('.', '\\.')}\\.\\d: not an address or CIDR block`),
      );
    }
    // CIDR blocks are what these lists are for: they load.
    const { config } = loadConfig({ cwd: dir, env: {}, sets: ['relay.trustedPeers=10.0.0.0/8,::1/128'] });
    expect(config.relay.trustedPeers).toEqual(['10.0.0.0/8', '::1/128']);
  });
});
