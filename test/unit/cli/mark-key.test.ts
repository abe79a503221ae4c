/**
 * The X-Sandgate-Mark key file: created on first use, only read when it exists, so a key mounted
 * read-only (the one key every node of a cluster shares, a Docker secret) works.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadOrCreateMarkKey } from '../../../src/cli/mark-key.js';
import { isSandgateError } from '../../../src/core/errors.js';
import { tempDir } from '../../support/tmp.js';

const root = join(import.meta.dirname, '..', '..', '..');
const KEY = 'ab'.repeat(32);

describe('loadOrCreateMarkKey', () => {
  it('creates a 32-byte hex key, mode 0600, on first use and reads the same key afterwards', () => {
    const path = join(tempDir(), 'state', 'mark.key');
    const key = loadOrCreateMarkKey(path);
    expect(key).toHaveLength(32);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readFileSync(path, 'utf8').trim()).toBe(key.toString('hex'));
    expect(loadOrCreateMarkKey(path).equals(key)).toBe(true);
  });

  it('reads an existing key without writing anything into its directory', () => {
    const dir = tempDir();
    const path = join(dir, 'mark.key');
    writeFileSync(path, `${KEY}\n`);
    // An old mtime: any file created (and removed) in the directory would move it to now.
    utimesSync(dir, 0, 0);
    expect(loadOrCreateMarkKey(path).toString('hex')).toBe(KEY);
    expect(statSync(dir).mtimeMs).toBe(0);
  });

  // Root writes anywhere: the child runs as nobody, which needs root to start (CI runs as root).
  it.skipIf(process.getuid?.() !== 0)(
    'reads a key in a directory the process cannot write (a read-only secret)',
    () => {
      const dir = tempDir();
      chmodSync(dir, 0o755);
      const path = join(dir, 'mark.key');
      writeFileSync(path, `${KEY}\n`, { mode: 0o644 });
      const script = `import('./src/cli/mark-key.ts').then((m) => process.stdout.write(m.loadOrCreateMarkKey(${JSON.stringify(path)}).toString('hex')))`;
      const child = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
        cwd: root,
        uid: 65534,
        gid: 65534,
        encoding: 'utf8',
      });
      expect(child.stderr).toBe('');
      expect(child.stdout).toBe(KEY);
    },
  );

  it('refuses a key file that is not at least 32 bytes of hex', () => {
    const path = join(tempDir(), 'mark.key');
    writeFileSync(path, 'not-a-key\n');
    let code: string | undefined;
    try {
      loadOrCreateMarkKey(path);
    } catch (err) {
      if (isSandgateError(err)) code = err.code;
    }
    expect(code).toBe('ERR_SECRET_FILE');
  });
});
