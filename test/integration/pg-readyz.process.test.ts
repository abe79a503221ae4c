/**
 * /readyz reports the state backend: `sandgate admin` as a real process on the PostgreSQL state is
 * ready; with PostgreSQL stopped it answers 503 naming the `state` check; once PostgreSQL is back it
 * is ready again, without a restart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SANDGATE_BIN } from '../support/cli.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { tempDir } from '../support/tmp.js';

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const giveUp = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > giveUp) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('/readyz on the PostgreSQL state', () => {
  let server: TestPostgres | undefined;
  let child: ChildProcess | undefined;
  beforeAll(async () => {
    server = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    if (child !== undefined && child.exitCode === null) child.kill('SIGKILL');
    await server?.stop();
  });

  it('ready; PostgreSQL stopped: 503 naming the state check; started again: ready, no restart', async () => {
    if (server === undefined) throw new Error('not started');
    const pgServer = server;
    const dir = tempDir('sg-readyz-');
    const tokenFile = join(dir, 'admin.token');
    writeFileSync(tokenFile, 'readyz-test-token-0123456789\n', { mode: 0o600 });
    const config = join(dir, 'sandgate.yaml');
    writeFileSync(
      config,
      JSON.stringify({
        stateDir: join(dir, 'state'),
        state: {
          url: `postgres://${pgServer.user}@${pgServer.host}:${pgServer.port}/${pgServer.database}`,
          tls: 'disable',
          queryTimeout: '1s',
          connectTimeout: '1s',
        },
        log: { file: join(dir, 'sandgate.log'), level: 'info' },
        admin: { enabled: true, listen: '127.0.0.1:0', tokenFile },
      }),
    );
    const proc = spawn(process.execPath, [SANDGATE_BIN, 'admin', '--config', config], {
      env: { PATH: process.env.PATH ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const base = await until('the admin port', () =>
      Promise.resolve(
        /listening on (http:\/\/\S+)/.exec(stdout)?.[1] ?? (proc.exitCode !== null ? 'exit' : undefined),
      ),
    );
    expect(base, stderr).not.toBe('exit');
    const readyz = async () => {
      const r = await request(`${base}/readyz`);
      return { status: r.statusCode, body: await r.body.text() };
    };

    expect(await readyz()).toEqual({ status: 200, body: 'ready\n' });

    await pgServer.stopServer('immediate');
    try {
      const down = await until('503', async () => {
        const r = await readyz();
        return r.status === 503 ? r : undefined;
      });
      expect(down.body).toBe('not ready: state\n');
      // /healthz still answers: the process is alive, only its state is not.
      expect((await request(`${base}/healthz`)).statusCode).toBe(200);
    } finally {
      await pgServer.startServer();
    }

    await until('ready again', async () => ((await readyz()).status === 200 ? true : undefined));
    expect(await readyz()).toEqual({ status: 200, body: 'ready\n' });
    expect(proc.exitCode).toBeNull();

    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 120_000);
});
