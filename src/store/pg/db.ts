import pg from 'pg';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
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
  await client.connect();
  return client;
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
    throw new SandgateError('ERR_STATE_DB', `cannot connect to the state database ${c.display}`, {
      cause,
      details: { url: c.display },
    });
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
