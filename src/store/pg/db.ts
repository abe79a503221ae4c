import pg from 'pg';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { printable } from '../../core/text.js';
import type { Migration } from '../migrations.js';
import { PG_MIGRATIONS } from './migrations.js';

/** How to reach the PostgreSQL state: resolved by the CLI (src/cli/compose/state.ts) from `state.*`. */
export interface PgConnection {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
  readonly password?: string;
  /** false: no TLS. */
  readonly ssl:
    false | { readonly rejectUnauthorized: boolean; readonly ca?: string; readonly servername?: string };
  /** The URL without a password, for logs and errors. */
  readonly display: string;
  readonly poolMax: number;
  readonly queryTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** Tests: the schema to use (search_path). */
  readonly schema?: string;
}

/** BIGINT and NUMERIC (sum, count) as numbers: every value we keep is an epoch ms or a count. */
const parseNumber = (v: string): number => Number(v);
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown =>
    format !== 'binary' && (oid === 20 || oid === 1700)
      ? parseNumber
      : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(
          oid,
          format,
        )) as pg.CustomTypesConfig['getTypeParser'],
};

function clientConfig(c: PgConnection): pg.ClientConfig {
  return {
    host: c.host,
    port: c.port,
    user: c.user,
    database: c.database,
    ...(c.password !== undefined ? { password: c.password } : {}),
    ssl: c.ssl === false ? false : { ...c.ssl },
    application_name: 'sandgate',
    connectionTimeoutMillis: c.connectTimeoutMs,
    query_timeout: c.queryTimeoutMs,
    statement_timeout: c.queryTimeoutMs,
    lock_timeout: c.queryTimeoutMs,
    keepAlive: true,
    types,
    ...(c.schema !== undefined ? { options: `-c search_path=${c.schema}` } : {}),
  };
}

/**
 * A bounded pool. Its 'error' event (an idle connection the server dropped, a failover) is logged,
 * never left unhandled: an unhandled one would end the process (and write to stderr).
 */
export function openPool(c: PgConnection, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(c),
    max: c.poolMax,
    idleTimeoutMillis: 30_000,
  });
  pool.on('error', (err) => {
    log.warn(
      { event: 'state.pool_error', err, url: c.display },
      'a PostgreSQL connection of the pool failed',
    );
  });
  return pool;
}

/** A connection of its own (migrations, LISTEN), with its 'error' event handled. */
export async function connectClient(c: PgConnection, log: Logger): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(c));
  client.on('error', (err) => {
    log.warn({ event: 'state.pool_error', err, url: c.display }, 'a PostgreSQL connection failed');
  });
  try {
    await client.connect();
  } catch (err) {
    // A failure on our side of the handshake (no password for SCRAM) leaves the socket open, and
    // the server waits for us up to its authentication_timeout: close it, or the process hangs.
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

/** Node's codes for a TLS handshake whose certificate does not verify. */
const TLS_CODES =
  /^(?:ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_(?:VERIFY|GET_ISSUER)|HOSTNAME_MISMATCH)/;

/**
 * A failure to connect to the state database, named for the operator: ERR_STATE_AUTH (the server
 * refused the user or password, or wants a password we do not have), ERR_STATE_TLS (the server's
 * certificate does not verify against state.caFile / the system CAs, its name is not
 * state.servername, or the server does not speak TLS), else ERR_STATE_DB. The message carries the
 * URL (never a password) and the driver's reason, which never holds the password either.
 */
export function connectionError(c: PgConnection, cause: unknown): SandgateError {
  if (cause instanceof SandgateError) return cause;
  const err = cause as { code?: unknown; message?: unknown };
  const code = typeof err.code === 'string' ? err.code : '';
  const reason = printable(typeof err.message === 'string' ? err.message : String(cause), { max: 300 });
  const details = { url: c.display, user: c.user, ...(code !== '' ? { reason: code } : {}) };
  // 28P01 invalid_password, 28000 invalid_authorization_specification (pg_hba.conf refused us).
  if (code === '28P01' || code === '28000' || /^SASL: .*password/.test(reason)) {
    const why =
      c.password === undefined && code === '' ? 'the server asks for a password and none is set' : reason;
    return new SandgateError(
      'ERR_STATE_AUTH',
      `the state database ${c.display} refused user ${c.user}: ${why} (password from state.passwordFile, SANDGATE_STATE_PASSWORD or PGPASSWORD)`,
      { cause, details },
    );
  }
  if (TLS_CODES.test(code) || /does not support SSL|establishing an SSL connection/.test(reason)) {
    return new SandgateError(
      'ERR_STATE_TLS',
      `the state database ${c.display}: TLS failed: ${reason} (state.tls, state.caFile, state.servername)`,
      { cause, details },
    );
  }
  return new SandgateError('ERR_STATE_DB', `cannot connect to the state database ${c.display}: ${reason}`, {
    cause,
    details,
  });
}

/** The advisory lock key the migrations hold ('sgmigrat'). */
const MIGRATION_LOCK = 0x73676d6967726174n;

/** The schema version (0 when the state has never been migrated). */
export async function pgSchemaVersion(q: pg.Pool | pg.Client): Promise<number> {
  const exists = await q.query<{ t: string | null }>("SELECT to_regclass('sandgate_schema')::text AS t");
  if (exists.rows[0]?.t === null || exists.rows[0]?.t === undefined) return 0;
  const r = await q.query<{ v: number | null }>('SELECT max(version) AS v FROM sandgate_schema');
  return r.rows[0]?.v ?? 0;
}

/**
 * Applies every migration newer than the database's version, each in its own transaction, while
 * holding a session advisory lock on a dedicated connection: two nodes starting at once migrate one
 * after the other, and the second finds nothing to do. Returns the versions it applied.
 */
export async function migratePg(
  c: PgConnection,
  log: Logger,
  migrations: readonly Migration[] = PG_MIGRATIONS,
): Promise<number[]> {
  let client: pg.Client;
  try {
    client = await connectClient({ ...c, queryTimeoutMs: Math.max(c.queryTimeoutMs, 120_000) }, log);
  } catch (cause) {
    throw connectionError(c, cause);
  }
  const applied: number[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]);
    await client.query(
      'CREATE TABLE IF NOT EXISTS sandgate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
    );
    const have = await pgSchemaVersion(client);
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (m.version <= have) continue;
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query('INSERT INTO sandgate_schema (version, name, applied_at) VALUES ($1, $2, $3)', [
          m.version,
          m.name,
          Date.now(),
        ]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
      applied.push(m.version);
      log.info({ event: 'state.migrated', version: m.version, name: m.name }, 'migrated the state database');
    }
    return applied;
  } catch (cause) {
    if (cause instanceof SandgateError) throw cause;
    throw new SandgateError('ERR_STATE_DB', `cannot migrate the state database ${c.display}`, {
      cause,
      details: { url: c.display },
    });
  } finally {
    // Ending the session releases the advisory lock even when the unlock is never sent.
    await client.query('SELECT pg_advisory_unlock_all()').catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}

/** The newest version this build knows. */
export const PG_SCHEMA_VERSION = Math.max(...PG_MIGRATIONS.map((m) => m.version));
