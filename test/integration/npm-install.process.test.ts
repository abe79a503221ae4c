/**
 * The CommuniGate install path of docs/communigate.md, as an administrator follows it: the package
 * is packed on a build host (`npm pack`), and the tarball installed with `npm install -g` on the
 * server, with a clean npm user configuration (an empty user config file, an empty cache, no
 * HOME settings), into a temporary prefix. better-sqlite3 is compiled there against the local
 * Node.js headers (`--nodedir`), as on a server that reaches only the package registry. Then the
 * installed `sandgate helper` answers INTF and a FILE request of the docs' Verify example, which
 * ends with EOF.
 *
 * Needs the npm registry (and a C++ toolchain): runs in CI, or locally with
 * SANDGATE_TEST_NPM_INSTALL=1. It packs the dist/ that `npm test` built.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';

const ROOT = join(import.meta.dirname, '../..');
const run = promisify(execFile);
const enabled = process.env.CI !== undefined || process.env.SANDGATE_TEST_NPM_INSTALL === '1';

/** The Node.js installation whose headers node-gyp uses (`/usr` for Debian's and NodeSource's nodejs). */
const NODE_DIR = dirname(dirname(process.execPath));

it.skipIf(!enabled)(
  'the packed tarball installs with a clean npm configuration, and its helper answers INTF and FILE',
  { timeout: 900_000 },
  async () => {
    expect(existsSync(join(ROOT, 'dist/cli/main.js'))).toBe(true);
    expect(existsSync(join(NODE_DIR, 'include/node/node_api.h'))).toBe(true);
    const dir = tempDir();
    const home = join(dir, 'home');
    const prefix = join(dir, 'prefix');
    mkdirSync(home);
    writeFileSync(join(dir, 'empty-npmrc'), '');
    // Only what a fresh root shell has; a proxy's CA (NODE_EXTRA_CA_CERTS) is the site's, not npm's.
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '',
      HOME: home,
      npm_config_userconfig: join(dir, 'empty-npmrc'),
      npm_config_cache: join(dir, 'npm-cache'),
      npm_config_update_notifier: 'false',
      npm_config_fund: 'false',
      npm_config_audit: 'false',
      ...(process.env.NODE_EXTRA_CA_CERTS !== undefined
        ? { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS }
        : {}),
    };

    // The build host: npm pack (its prepack script builds; dist/ is already built here).
    const packed = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], {
      cwd: ROOT,
      env,
    });
    const tarball = join(dir, packed.stdout.trim().split('\n').at(-1)!);
    expect(existsSync(tarball)).toBe(true);

    // The server: the tarball, with the command docs/communigate.md gives.
    await run(
      'npm',
      [
        'install',
        '-g',
        '--prefix',
        prefix,
        `--nodedir=${NODE_DIR}`,
        '--allow-scripts=better-sqlite3',
        tarball,
      ],
      { cwd: dir, env, maxBuffer: 64 * 1024 * 1024 },
    );
    const bin = join(prefix, 'bin/sandgate');
    expect(existsSync(bin)).toBe(true);

    // docs/communigate.md's Verify example: a queue file of our own, INTF, FILE, then EOF.
    const base = join(dir, 'CommuniGate');
    mkdirSync(join(base, 'Queue/test'), { recursive: true });
    writeFileSync(
      join(base, 'Queue/test/1.msg'),
      'P I 01-01-2024 00:00:00 0000 ____ ____ <a@example.net>\nR W 01-01-2024 00:00:00 0000 ____ _FY_ <b@example.net>\nS SMTP [192.0.2.1]\n\nSubject: test\n\nhello\n',
    );
    const helper = spawn(
      bin,
      ['helper', '--set', `stateDir=${join(dir, 'state')}`, '--set', 'scan.chain=rules'],
      { cwd: base, env: { PATH: env.PATH, HOME: home }, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    helper.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    helper.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      helper.once('exit', (c) => resolve(c));
      helper.stdin.end('1 INTF 4\n2 FILE Queue/test/1.msg\n');
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.split('\n').filter((l) => l !== '' && !l.startsWith('* '));
    expect(lines[0]).toBe('1 INTF 4');
    expect(lines[1]).toMatch(/^2 ADDHEADER "X-Sandgate-Verdict: clean; .*\\eX-Sandgate-Mark: .*" OK$/);
    expect(lines).toHaveLength(2);
  },
);
