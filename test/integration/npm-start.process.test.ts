/**
 * `npm start` stopped as a service manager or a terminal stops it: SIGTERM to npm's own process.
 * The start script hands the relay the signals (`exec`), so the relay stops gracefully and both of
 * its ports are free once npm has exited. (With `npm run build && node ...` the shell and npm
 * ended and the relay kept ports 10025 and 10030.) Runs in a copy of the checkout, so its build
 * does not rewrite the dist/ other tests run.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';

const ROOT = join(import.meta.dirname, '../..');

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

it(
  'SIGTERM to npm start frees both ports: the relay gets the signal and stops',
  { timeout: 300_000 },
  async () => {
    const checkout = join(tempDir(), 'sandgate');
    mkdirSync(checkout);
    for (const entry of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'src', 'config']) {
      cpSync(join(ROOT, entry), join(checkout, entry), { recursive: true });
    }
    symlinkSync(join(ROOT, 'node_modules'), join(checkout, 'node_modules'));

    // The README's command, as a user's shell starts it; only the two ports are moved to free ones.
    const npm = spawn('npm', ['start'], {
      cwd: checkout,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? checkout,
        SANDGATE_RELAY__LISTEN: '127.0.0.1:0',
        SANDGATE_ADMIN__LISTEN: '127.0.0.1:0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const npmExit = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    let stderr = '';
    npm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const seen: { relay?: number; admin?: number; pid?: number } = {};
    cleanups.push(() => {
      // Whatever the outcome, nothing this test started outlives it.
      if (npm.exitCode === null) npm.kill('SIGKILL');
      if (seen.pid !== undefined && alive(seen.pid)) process.kill(seen.pid, 'SIGKILL');
    });
    await new Promise<void>((resolve, reject) => {
      void npmExit.then((code) => reject(new Error(`npm start exited ${code} before listening: ${stderr}`)));
      createInterface({ input: npm.stdout }).on('line', (line) => {
        if (!line.startsWith('{')) return; // npm's own lines and tsc's
        const rec = JSON.parse(line) as { event?: string; port?: number; pid?: number };
        seen.pid ??= rec.pid;
        if (rec.event === 'relay.listening') seen.relay = rec.port;
        if (rec.event === 'admin.listening') seen.admin = rec.port;
        if (seen.relay !== undefined && seen.admin !== undefined) resolve();
      });
    });
    const ports = [seen.relay!, seen.admin!];
    for (const port of ports) expect(await accepts(port)).toBe(true);
    // The relay is npm's own child: the shell made way for it.
    expect(seen.pid).not.toBe(npm.pid);

    npm.kill('SIGTERM');
    await npmExit;
    // Both ports free and the relay gone, within a bound (it finishes messages in flight: none here).
    await expect
      .poll(async () => [...(await Promise.all(ports.map(accepts))), alive(seen.pid!)], {
        timeout: 15_000,
        interval: 200,
      })
      .toEqual([false, false, false]);
  },
);
