import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { ReadyCheck } from '../../admin/server.js';
import type { Config } from '../../config/schema.js';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { silentLogger } from '../../core/logger.js';
import type { StatePorts } from '../../core/ports.js';
import type { PgConnection, PostgresStatePorts } from '../../store/pg-state.js';
import { openSqliteState } from '../../store/sqlite-state.js';
import { readSecretFile } from '../config-files.js';

/** The quarantine directory: quarantine.dir, or <stateDir>/quarantine. */
export function quarantineDir(config: Config): string {
  return config.quarantine.dir ?? join(config.stateDir, 'quarantine');
}

/** The relay queue's directory: relay.queue.dir, or <stateDir>/queue. */
export function queueDir(config: Config): string {
  return config.relay.queue.dir ?? join(config.stateDir, 'queue');
}

/** 'sqlite' or 'postgresql': what `state.url` selects. */
export function stateBackend(config: Config): 'sqlite' | 'postgresql' {
  return config.state.url === undefined ? 'sqlite' : 'postgresql';
}

/**
 * How to reach the PostgreSQL state: the URL, the password from state.passwordFile or the
 * environment (SANDGATE_STATE_PASSWORD, then PGPASSWORD), the TLS options, the pool and timeouts.
 */
export function pgConnection(
  config: Config,
  env: Readonly<Record<string, string | undefined>> = process.env,
): PgConnection {
  const s = config.state;
  if (s.url === undefined) {
    throw new SandgateError('ERR_CONFIG_INVALID', 'state.url is not set', { details: { path: 'state.url' } });
  }
  const password =
    s.passwordFile !== undefined
      ? readSecretFile(s.passwordFile, 'state.passwordFile')
      : (nonEmpty(env.SANDGATE_STATE_PASSWORD) ?? nonEmpty(env.PGPASSWORD));
  let ca: string | undefined;
  if (s.caFile !== undefined) {
    try {
      ca = readFileSync(s.caFile, 'utf8');
    } catch (cause) {
      throw new SandgateError('ERR_CONFIG_INVALID', `state.caFile: cannot read ${s.caFile}`, {
        cause,
        details: { path: 'state.caFile', file: s.caFile },
      });
    }
  }
  const ssl: PgConnection['ssl'] =
    s.tls === 'disable'
      ? false
      : s.tls === 'require'
        ? { rejectUnauthorized: false }
        : {
            rejectUnauthorized: true,
            ...(ca !== undefined ? { ca } : {}),
            // SNI never carries an IP address (RFC 6066): for one, node-postgres checks the
            // certificate against the host (its IP SANs) and sends no server name.
            ...(s.servername !== undefined || isIP(s.url.host) === 0
              ? { servername: s.servername ?? s.url.host }
              : {}),
          };
  return {
    host: s.url.host,
    port: s.url.port,
    user: s.url.user,
    database: s.url.database,
    ...(password !== undefined ? { password } : {}),
    ssl,
    display: s.url.display,
    poolMax: s.pool.max,
    queryTimeoutMs: s.queryTimeout,
    connectTimeoutMs: s.connectTimeout,
  };
}

function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t === undefined || t === '' ? undefined : t;
}

export interface OpenStateOptions {
  readonly now?: () => number;
  readonly log?: Logger;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/**
 * The state the configuration names, every port of it: SQLite in stateDir (state.url unset), or
 * PostgreSQL (state.url) with the relay queue still in SQLite in stateDir (a node's queue is its
 * own, like an MTA's). The one place that picks a state backend.
 */
export async function openState(config: Config, options: OpenStateOptions = {}): Promise<StatePorts> {
  const now = options.now !== undefined ? { now: options.now } : {};
  if (config.state.url === undefined) {
    return openSqliteState(config.stateDir, {
      quarantineDir: quarantineDir(config),
      queueDir: queueDir(config),
      ...now,
    });
  }
  // Loaded only when configured: a single host never loads pg.
  const { openPostgresState } = await import('../../store/pg-state.js');
  return openPostgresState(pgConnection(config, options.env), {
    log: options.log ?? silentLogger,
    ...now,
    relayQueue: () => {
      const local = openSqliteState(config.stateDir, { queueDir: queueDir(config), ...now });
      return { store: local.relayQueue, close: () => local.close() };
    },
  });
}

/**
 * The /readyz check named `state`: passes when the state answers (PostgreSQL: one `SELECT 1`
 * within state.queryTimeout; SQLite: always, it is a local file).
 */
export function stateCheck(state: StatePorts): ReadyCheck {
  const pgState = asPostgres(state);
  return { name: 'state', check: async () => (pgState === undefined ? true : pgState.ping()) };
}

/** The PostgreSQL ports, when the state is PostgreSQL. */
export function asPostgres(state: StatePorts): PostgresStatePorts | undefined {
  return (state as Partial<PostgresStatePorts>).backend === 'postgresql'
    ? (state as PostgresStatePorts)
    : undefined;
}
