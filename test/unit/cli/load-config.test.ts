import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { main } from '../../../src/cli/main.js';
import { configSchema } from '../../../src/config/schema.js';
import { isSandgateError } from '../../../src/core/errors.js';
import { loadConfig, objectShape, redactConfig } from '../../../src/cli/load-config.js';
import { memoryIo } from '../../integration/quarantine-harness.js';
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
    expect(loaded.config.stateDir).toBe(join(dir, 'state'));
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

describe('paths in the configuration', () => {
  it('a relative path in the file is relative to the file, from any working directory', () => {
    const root = tempDir();
    const conf = join(root, 'etc', 'sg');
    mkdirSync(conf, { recursive: true });
    const file = join(conf, 'sandgate.yaml');
    writeFileSync(
      file,
      [
        'stateDir: ../../state',
        'log:',
        '  file: logs/sandgate.log',
        'relay:',
        '  nextHop: directory:../out',
        '  queue:',
        '    dir: ./queue',
        'quarantine:',
        '  release:',
        '    target: submitted:Submitted',
        '    caFile: /etc/ssl/ca.pem',
        '  notify:',
        '    target: smtp://127.0.0.1:25',
        'admin:',
        '  tokenFile: admin.token',
        '',
      ].join('\n'),
    );
    const elsewhere = tempDir();
    const loaded = loadConfig({ file, env: {}, cwd: elsewhere });
    const c = loaded.config;
    expect(c.stateDir).toBe(join(root, 'state'));
    expect(c.log.file).toBe(join(conf, 'logs', 'sandgate.log'));
    expect(c.relay.nextHop).toEqual({ kind: 'directory', path: join(conf, '..', 'out') });
    expect(c.relay.queue.dir).toBe(join(conf, 'queue'));
    expect(c.quarantine.release.target).toEqual({ kind: 'submitted', path: join(conf, 'Submitted') });
    expect(c.quarantine.release.caFile).toBe('/etc/ssl/ca.pem');
    expect(c.quarantine.notify.target).toEqual({ kind: 'smtp', host: '127.0.0.1', port: 25 });
    expect(c.admin.tokenFile).toBe(join(conf, 'admin.token'));
    // Each relative path the file used is reported with its line, for check-config's warning.
    expect(loaded.relativePaths.map((r) => [r.key, r.value, r.line])).toEqual([
      ['stateDir', '../../state', 1],
      ['log.file', 'logs/sandgate.log', 3],
      ['relay.nextHop', 'directory:../out', 5],
      ['relay.queue.dir', './queue', 7],
      ['quarantine.release.target', 'submitted:Submitted', 10],
      ['admin.tokenFile', 'admin.token', 15],
    ]);
  });

  it('paths from the environment and --set stay relative to the working directory', () => {
    const root = tempDir();
    const file = join(root, 'c.yaml');
    writeFileSync(file, 'stateDir: ./from-file\n');
    const cwd = tempDir();
    const { config, relativePaths } = loadConfig({
      file,
      cwd,
      env: { SANDGATE_STATEDIR: 'from-env', SANDGATE_RELAY__NEXTHOP: './delivered' },
      sets: ['admin.tokenFile=tok', 'quarantine.release.target=directory:rel'],
    });
    expect(config.stateDir).toBe(join(cwd, 'from-env'));
    expect(config.relay.nextHop).toEqual({ kind: 'directory', path: join(cwd, 'delivered') });
    expect(config.admin.tokenFile).toBe(join(cwd, 'tok'));
    expect(config.quarantine.release.target).toEqual({ kind: 'directory', path: join(cwd, 'rel') });
    expect(relativePaths.map((r) => r.key)).toEqual(['stateDir']);
  });

  it('every key that names a file or directory is marked as a path in the schema', () => {
    const leaves = (schema: z.ZodType, prefix: string[] = []): string[][] => {
      const shape = objectShape(schema);
      if (shape === undefined) return [prefix];
      return Object.entries(shape).flatMap(([k, child]) => leaves(child, [...prefix, k]));
    };
    const pathLike = leaves(configSchema).filter((p) =>
      /^(?!create).*(?:File|Dir|dir|Directory|nextHop|target)$/.test(p.at(-1)!),
    );
    expect(pathLike.length).toBeGreaterThanOrEqual(15);
    const dir = tempDir();
    const file = join(dir, 'one.yaml');
    const unresolved: string[] = [];
    for (const path of pathLike) {
      const target = /(?:nextHop|target)$/.test(path.at(-1)!);
      const doc: Record<string, unknown> = {};
      let node = doc;
      for (const key of path.slice(0, -1)) {
        const child: Record<string, unknown> = {};
        node[key] = child;
        node = child;
      }
      node[path.at(-1)!] = target ? 'directory:rel/x' : 'rel/x';
      writeFileSync(file, stringify(doc));
      let value: unknown = loadConfig({ file, env: {}, cwd: '/' }).config;
      for (const key of path) value = (value as Record<string, unknown>)[key];
      const got = target ? (value as { path: string }).path : (value as string);
      if (got !== join(dir, 'rel/x')) unresolved.push(path.join('.'));
    }
    expect(unresolved).toEqual([]);
  });

  it('check-config warns about each relative path, naming the file and line', async () => {
    const dir = tempDir();
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'scan:\n  chain: [rules]\nstateDir: ./state\n');
    const mem = memoryIo(tempDir());
    const code = await main(['check-config', '--config', file], mem.io);
    expect(code).toBe(0);
    expect(mem.stderr()).toContain(`warning: stateDir: relative path "./state" (${file}:3)`);
    expect(mem.stderr()).toContain(join(dir, 'state'));
    expect(mem.stdout().toString()).toContain(`stateDir: ${join(dir, 'state')}`);
  });
});
