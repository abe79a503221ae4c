/**
 * A real PostgreSQL server for the tests: initdb into a temporary directory, started with pg_ctl
 * on a free loopback port as the unprivileged `postgres` user (CI runs as root, and PostgreSQL
 * refuses to run as root), trust authentication on loopback only, removed by stop(). Options:
 * scram-sha-256 password authentication on loopback, and TLS (ssl=on) with a server certificate
 * signed by a throw-away CA that openssl makes in the server's temporary directory.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './free-port.js';
import { makeTestCa, type TestCa } from './test-ca.js';

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
  /** The superuser's password, when started with `password` (scram-sha-256 on loopback). */
  readonly password?: string;
  /** With `tls`: the PEM file of the CA that signed the server certificate (and of another CA, for failures). */
  readonly tls?: { readonly caFile: string; readonly otherCaFile: string; readonly names: readonly string[] };
  /** A new, empty database (a state of its own for a test that runs sandgate as a process). */
  createDatabase(): Promise<string>;
}

export interface StartPostgresOptions {
  /** Password authentication (scram-sha-256) for loopback TCP; the superuser `sandgate` gets this password. */
  readonly password?: string;
  /**
   * ssl=on with a certificate for 127.0.0.1 and these DNS names (default ['db.test']) signed by a
   * throw-away CA; clients may still connect without TLS.
   */
  readonly tls?: boolean | { readonly names?: readonly string[] };
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

export async function startPostgres(options: StartPostgresOptions = {}): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-pg-'));
  const root = userInfo().uid === 0;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  const own = (path: string) => {
    if (root) chownSync(path, id('-u'), id('-g'));
  };
  own(dir);
  const data = join(dir, 'data');
  const user = 'sandgate';
  const database = 'sandgate';
  const { password } = options;
  const auth = ['--auth=trust'];
  if (password !== undefined) {
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    own(pwfile);
    auth.splice(0, 1, '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`);
  }
  await asPostgres('initdb', ['-D', data, '-U', user, ...auth, '--locale=C', '--encoding=UTF8', '-N']);
  const tlsNames =
    options.tls === undefined || options.tls === false
      ? undefined
      : ((options.tls === true ? undefined : options.tls.names) ?? ['db.test']);
  let tls: TestPostgres['tls'];
  const cas: TestCa[] = [];
  let sslArgs = '';
  if (tlsNames !== undefined) {
    // A CA with the server's certificate, and a second CA that signed nothing we serve.
    const ca = makeTestCa(tlsNames, ['127.0.0.1']);
    const other = makeTestCa(['other.test']);
    cas.push(ca, other);
    // The server reads its key from the data directory: owned by it, mode 0600.
    for (const [from, to] of [
      [ca.certFile, 'server.crt'],
      [ca.keyFile, 'server.key'],
    ] as const) {
      copyFileSync(from, join(data, to));
      own(join(data, to));
    }
    execFileSync('chmod', ['0600', join(data, 'server.key')]);
    sslArgs = ' -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key';
    tls = { caFile: ca.caFile, otherCaFile: other.caFile, names: tlsNames };
  }
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
      `-p ${port} -h 127.0.0.1 -k ${dir} -c fsync=off -c full_page_writes=off -c max_connections=200${sslArgs}`,
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
    const c = new pg.Client({
      host,
      port,
      user,
      database: db,
      connectionTimeoutMillis: 10_000,
      ...(password !== undefined ? { password } : {}),
    });
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
  let databases = 0;
  return {
    host,
    port,
    user,
    database,
    ...(password !== undefined ? { password } : {}),
    ...(tls !== undefined ? { tls } : {}),
    admin: () => connect(database),
    async createDatabase() {
      const name = `${database}_${process.pid}_${++databases}`;
      const a = await connect(database);
      try {
        await a.query(`CREATE DATABASE ${name}`);
      } finally {
        await a.end();
      }
      return name;
    },
    stopServer: (mode = 'fast') => asPostgres('pg_ctl', ['-D', data, '-m', mode, '-w', 'stop']),
    startServer: start,
    async stop() {
      if (stopped) return;
      stopped = true;
      await asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      for (const ca of cas) ca.remove();
    },
  };
}
