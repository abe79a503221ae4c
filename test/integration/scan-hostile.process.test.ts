/**
 * `sandgate scan` as a real process against hostile input (issue 14): endless stdin, a file over
 * the size limit, signals mid-read, a reader that closes the pipe early, and the start-up sweep of
 * spool files whose owner is gone.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SANDGATE_BIN } from '../support/cli.js';
import { specimens } from '../support/specimens.js';
import { tempDir } from '../support/tmp.js';

/** Every file under `dir` (recursively), relative paths; [] when it does not exist. */
export function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function spawnScan(
  args: readonly string[],
  cwd: string,
  env: Record<string, string>,
): { child: ChildProcessWithoutNullStreams; exit: Promise<Exit> } {
  const child = spawn(process.execPath, [SANDGATE_BIN, 'scan', ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  // The process may stop reading (and exit) while we still write.
  child.stdin.on('error', () => undefined);
  const exit = new Promise<Exit>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, exit };
}

describe('sandgate scan: size limit', () => {
  it('stops reading an endless stdin at scan.maxMessageSize: exit 2, ERR_MESSAGE_TOO_LARGE, no file left', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    const { child, exit } = spawnScan(
      ['--set', 'scan.maxMessageSize=1M', '--set', 'scan.memorySpoolThreshold=64k', '-'],
      dir,
      { SANDGATE_STATE_DIR: state },
    );
    // `cat /dev/zero | sandgate scan -`, bounded so that the old behaviour (read it all) ends too.
    const cap = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let written = 0;
    let stopped = false;
    void exit.then(() => (stopped = true));
    const feed = () => {
      while (!stopped && written < cap) {
        written += chunk.length;
        if (!child.stdin.write(chunk)) {
          child.stdin.once('drain', feed);
          return;
        }
      }
      child.stdin.end();
    };
    feed();
    const r = await exit;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sandgate scan: .*\[ERR_MESSAGE_TOO_LARGE\]$/m);
    expect(r.stdout).toBe('');
    // It stopped at the limit: far less than the input was taken.
    expect(written).toBeLessThan(8 * 1024 * 1024);
    expect(filesUnder(join(state, 'spool'))).toEqual([]);
  });

  it('refuses a file over scan.maxMessageSize without scanning it: exit 2, ERR_MESSAGE_TOO_LARGE', async () => {
    const dir = tempDir();
    const file = join(dir, 'big.eml');
    writeFileSync(file, specimens.eicarBase64());
    truncateSync(file, 3 * 1024 * 1024); // sparse: the EICAR part stays at the start
    const r = await spawnScan(['--set', 'scan.maxMessageSize=2M', 'big.eml'], dir, {
      SANDGATE_STATE_DIR: join(dir, 'state'),
    }).exit;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^sandgate scan: big\.eml is larger than scan\.maxMessageSize .*\[ERR_MESSAGE_TOO_LARGE\]$/m,
    );
    expect(r.stdout).toBe('');
    // Under the limit the same file is scanned (and found).
    const scanned = await spawnScan(['--set', 'scan.maxMessageSize=4M', 'big.eml'], dir, {
      SANDGATE_STATE_DIR: join(dir, 'state'),
    }).exit;
    expect(scanned.code).toBe(1);
  });
});
