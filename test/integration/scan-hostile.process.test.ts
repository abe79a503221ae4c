/**
 * `sandgate scan` as a real process against hostile input (issue 14): endless stdin, a file over
 * the size limit, signals mid-read, a reader that closes the pipe early, and the start-up sweep of
 * spool files whose owner is gone.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawn as spawnProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SANDGATE_BIN } from '../support/cli.js';
import { CLEAN_MAIL } from '../support/runtime.js';
import { specimens } from '../support/specimens.js';
import { processStartTime, tagOf } from '../../src/mime/spool-owner.js';
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

/** Polls `done` every 20 ms until it holds, failing after `ms`. */
async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const limit = Date.now() + ms;
  while (!done()) {
    if (Date.now() > limit) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
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

describe('sandgate scan: spool files on every exit path', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} while stdin is being read leaves no spool file`, async () => {
      const dir = tempDir();
      const state = join(dir, 'state');
      const { child, exit } = spawnScan(['--set', 'scan.memorySpoolThreshold=1k', '-'], dir, {
        SANDGATE_STATE_DIR: state,
      });
      child.stdin.write(CLEAN_MAIL + 'x'.repeat(100_000));
      // The message has moved to a file: the process is mid-read (stdin stays open).
      await until(() => filesUnder(join(state, 'spool')).length > 0, 'the spool file');
      child.kill(signal);
      const r = await exit;
      expect(r.code).toBe(signal === 'SIGTERM' ? 143 : 130);
      expect(filesUnder(join(state, 'spool'))).toEqual([]);
      expect(r.stderr).toBe('');
    });
  }

  it("a start removes the spool files of gone owners, keeps a live foreign process's, and never touches queue/ or quarantine/", async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    const sleeper = spawnProcess('sleep', ['60'], { stdio: 'ignore' });
    try {
      await new Promise((resolve, reject) => {
        sleeper.once('spawn', resolve);
        sleeper.once('error', reject);
      });
      const live = tagOf({ pid: sleeper.pid!, start: processStartTime(sleeper.pid!)! });
      const dead = tagOf({ pid: 4_194_305, start: '5' }); // above PID_MAX_LIMIT: never running
      const reused = tagOf({ pid: sleeper.pid!, start: '1' }); // the pid, but another process
      const layout = {
        [`spool/sg-aaaaaa-0000000001.${live}.eml`]: true,
        [`spool/sg-aaaaaa-0000000002.${dead}.eml`]: false,
        [`spool/rules/part-00aa.${dead}.bin`]: false,
        [`spool/clamd/part-00bb.${reused}.bin`]: false,
        [`spool/pt-sandbox/part-00cc.${dead}.bin`]: false,
        [`spool/quarantine/part-00dd.${live}.bin`]: true,
        // Old names: a day old goes, younger stays (see spool-owner.ts).
        'spool/sg-aaaaaa-0000000003.eml': false,
        'spool/sg-aaaaaa-0000000004.eml': true,
        // Not spool/: never touched, whatever the name says.
        [`queue/sg-aaaaaa-0000000005.${dead}.eml`]: true,
        [`quarantine/2026-01-01/sg-aaaaaa-0000000006.${dead}.eml`]: true,
      };
      for (const rel of Object.keys(layout)) {
        mkdirSync(join(state, rel, '..'), { recursive: true });
        writeFileSync(join(state, rel), 'left behind');
      }
      const old = (Date.now() - 25 * 3_600_000) / 1000;
      utimesSync(join(state, 'spool/sg-aaaaaa-0000000003.eml'), old, old);
      writeFileSync(join(dir, 'm.eml'), CLEAN_MAIL);
      const r = await spawnScan(['m.eml'], dir, { SANDGATE_STATE_DIR: state }).exit;
      expect(r.code).toBe(0);
      const left = Object.fromEntries(Object.keys(layout).map((rel) => [rel, existsSync(join(state, rel))]));
      expect(left).toEqual(layout);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });
});

describe('sandgate scan: a reader that closes the pipe early', () => {
  /** `{ echo first; sandgate scan FILE; } | head -1`: head has exited before scan writes. */
  function pipeToHead(dir: string, file: string): Promise<Exit> {
    const script = '{ echo first; "$0" "$1" scan "$2"; } | head -1; exit "${PIPESTATUS[0]}"';
    return new Promise((resolve, reject) => {
      const child = spawnProcess('bash', ['-c', script, process.execPath, SANDGATE_BIN, file], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? '', SANDGATE_STATE_DIR: join(dir, 'state') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
  }

  it("exits quietly with the verdict's exit code on EPIPE (0 clean, 1 malicious), without a stack trace", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'clean.eml'), CLEAN_MAIL);
    writeFileSync(join(dir, 'eicar.eml'), specimens.eicarBase64());
    const clean = await pipeToHead(dir, 'clean.eml');
    expect(clean).toMatchObject({ code: 0, stdout: 'first\n', stderr: '' });
    const infected = await pipeToHead(dir, 'eicar.eml');
    expect(infected).toMatchObject({ code: 1, stdout: 'first\n', stderr: '' });
  });
});
