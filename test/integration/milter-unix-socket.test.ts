/**
 * `milter.listen: unix:/path`: the socket's mode and owner as configured, a stale socket file
 * replaced, a live one or another file refused, the file removed on shutdown; mail through it.
 */
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MilterClient } from '../support/milter-client.js';
import { startMilter, type MilterHarness } from '../support/milter.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sg-milter-unix-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function harness(path: string, milter: Record<string, unknown> = {}): Promise<MilterHarness> {
  const h = await startMilter({ config: { milter: { listen: `unix:${path}`, ...milter } } });
  cleanups.push(() => h.close());
  return h;
}

const CLEAN =
  'From: a@test.local\r\nTo: b@example.test\r\nSubject: over a unix socket\r\n' +
  'Message-ID: <unix-1@test.local>\r\n\r\nJust text.\r\n';

/** A uid and gid from the system's files, as the milter resolves names. */
function idOf(file: string, name: string): number {
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === name);
  return Number(line?.split(':')[2]);
}

const isRoot = process.getuid?.() === 0;

describe('milter on a unix socket', () => {
  it('listens with the configured mode, takes mail, and removes the socket when it stops', async () => {
    const path = join(tempDir(), 'milter.sock');
    const h = await harness(path, { socketMode: '0640' });
    expect(h.bound).toEqual({ kind: 'unix', path });
    const st = lstatSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o640);
    const c = await MilterClient.connect(path);
    cleanups.push(() => c.close());
    await c.negotiate();
    await c.hello();
    expect((await c.message({ raw: CLEAN })).at(-1)).toEqual({ kind: 'accept' });
    expect(h.logs.events('milter.listening')[0]).toMatchObject({ socket: path });
    await h.server.close();
    expect(existsSync(path)).toBe(false);
  });

  it.runIf(isRoot)('gives the socket to socketOwner (user:group by name)', async () => {
    const path = join(tempDir(), 'milter.sock');
    await harness(path, { socketOwner: 'nobody:nogroup', socketMode: '0660' });
    const st = statSync(path);
    expect(st.uid).toBe(idOf('/etc/passwd', 'nobody'));
    expect(st.gid).toBe(idOf('/etc/group', 'nogroup'));
    expect(st.mode & 0o7777).toBe(0o660);
    // Only the group is given (":group"): the owner stays ours.
    const path2 = join(tempDir(), 'milter2.sock');
    await harness(path2, { socketOwner: ':nogroup' });
    expect(statSync(path2).uid).toBe(process.getuid?.());
    expect(statSync(path2).gid).toBe(idOf('/etc/group', 'nogroup'));
  });

  it('refuses an unknown socketOwner with ERR_CONFIG_INVALID naming the key', async () => {
    const path = join(tempDir(), 'milter.sock');
    await expect(
      startMilter({ config: { milter: { listen: `unix:${path}`, socketOwner: 'no-such-user-here' } } }),
    ).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID', details: { key: 'milter.socketOwner' } });
  });

  it('replaces a socket file left by a process that died', async () => {
    const path = join(tempDir(), 'milter.sock');
    // A process that binds the path and dies without cleaning up (SIGKILL).
    const child = spawn(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((resolve) => child.once('exit', resolve));
    expect(lstatSync(path).isSocket()).toBe(true);
    await harness(path);
    const c = await MilterClient.connect(path);
    cleanups.push(() => c.close());
    await c.negotiate();
    await c.hello();
    expect((await c.message({ raw: CLEAN })).at(-1)).toEqual({ kind: 'accept' });
  });

  it('refuses a path another process listens on, or that is not a socket, and leaves it alone', async () => {
    const dir = tempDir();
    const live = join(dir, 'live.sock');
    const other = net.createServer().listen(live);
    await new Promise((resolve) => other.once('listening', resolve));
    cleanups.push(() => new Promise<void>((resolve) => other.close(() => resolve())));
    await expect(startMilter({ config: { milter: { listen: `unix:${live}` } } })).rejects.toMatchObject({
      code: 'ERR_CONFIG_INVALID',
      details: { key: 'milter.listen' },
    });
    // The other process still has its socket.
    const probe = net.connect(live);
    await new Promise<void>((resolve, reject) => {
      probe.once('connect', () => resolve());
      probe.once('error', reject);
    });
    probe.destroy();

    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    await expect(startMilter({ config: { milter: { listen: `unix:${file}` } } })).rejects.toMatchObject({
      code: 'ERR_CONFIG_INVALID',
      details: { key: 'milter.listen' },
    });
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });
});
