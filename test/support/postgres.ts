/**
 * A real PostgreSQL server for the tests: initdb into a temporary directory, started with pg_ctl
 * on a free loopback port as the unprivileged `postgres` user (CI runs as root, and PostgreSQL
 * refuses to run as root), trust authentication on loopback only, removed by stop().
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './free-port.js';

const run = promisify(execFile);

export const PG_BIN = process.env.SANDGATE_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export function postgresAvailable(): boolean {
  return existsSync(join(PG_BIN, 'initdb')) && existsSync(join(PG_BIN, 'pg_ctl'));
}

export interface TestPostgres {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
  /** A client connection (as the superuser) for test set-up and for pg_terminate_backend. */
  admin(): Promise<pg.Client>;
  /** pg_ctl stop -m immediate|fast. */
  stopServer(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Starts the stopped server again on the same port and data directory. */
  startServer(): Promise<void>;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/** One statement as the superuser on a connection of its own (CREATE DATABASE, CREATE SCHEMA, DROP). */
export async function adminQuery(server: TestPostgres, sql: string): Promise<void> {
  const admin = await server.admin();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

/** Runs a PostgreSQL binary as the unprivileged user when we are root. */
async function asPostgres(bin: string, args: string[]): Promise<void> {
  const file = join(PG_BIN, bin);
  if (userInfo().uid === 0)
    await run('runuser', ['-u', 'postgres', '--', file, ...args], { timeout: 60_000 });
  else await run(file, args, { timeout: 60_000 });
}

export async function startPostgres(): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-pg-'));
  const root = userInfo().uid === 0;
  if (root) {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, id('-u'), id('-g'));
  }
  const data = join(dir, 'data');
  const user = 'sandgate';
  const database = 'sandgate';
  await asPostgres('initdb', ['-D', data, '-U', user, '--auth=trust', '--locale=C', '--encoding=UTF8', '-N']);
  let port = 0;
  const start = async (): Promise<void> => {
    await asPostgres('pg_ctl', [
      '-D',
      data,
      '-l',
      join(dir, 'log'),
      '-w',
      '-t',
      '60',
      '-o',
      `-p ${port} -h 127.0.0.1 -k ${dir} -c fsync=off -c full_page_writes=off -c max_connections=200`,
      'start',
    ]);
  };
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await start();
      break;
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
  const host = '127.0.0.1';
  const connect = async (db: string): Promise<pg.Client> => {
    const c = new pg.Client({ host, port, user, database: db, connectionTimeoutMillis: 10_000 });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  const c = await connect('postgres');
  try {
    await c.query(`CREATE DATABASE ${database}`);
  } finally {
    await c.end();
  }
  let stopped = false;
  return {
    host,
    port,
    user,
    database,
    admin: () => connect(database),
    stopServer: (mode = 'fast') => asPostgres('pg_ctl', ['-D', data, '-m', mode, '-w', 'stop']),
    startServer: start,
    async stop() {
      if (stopped) return;
      stopped = true;
      await asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
