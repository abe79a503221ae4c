import type pg from 'pg';
import type {
  AllowList,
  ClusterStore,
  FirstFailureStore,
  InflightStore,
  PtLoadStore,
  PtTaskStore,
  QuarantineStore,
  RelayQueueStore,
  ScannerVersionStore,
  StatePorts,
  VerdictStore,
} from '../core/ports.js';
import type { Logger } from '../core/logger.js';
import { SandgateError } from '../core/errors.js';
import { MARK_KEY_FINGERPRINT } from '../core/cluster.js';
import type { StoredFingerprints } from './fingerprints.js';
import { migratePg, openPool, pgSchemaVersion, PG_SCHEMA_VERSION, type PgConnection } from './pg/db.js';
import { PG_TABLES } from './pg/migrations.js';
import { PgQuarantineStore } from './pg/quarantine.js';
import { PgListener } from './pg/listener.js';
import {
  PgAllowList,
  PgClusterStore,
  PgFirstFailureStore,
  PgInflightStore,
  PgPtLoadStore,
  PgPtTaskStore,
  PgScannerVersionStore,
  PgVerdictStore,
} from './pg/stores.js';

export type { PgConnection } from './pg/db.js';

export interface PostgresStateOptions {
  readonly log: Logger;
  /** The relay queue stays on this node (SQLite in stateDir): opened on first use, closed with the state. */
  readonly relayQueue: () => { readonly store: RelayQueueStore; close(): Promise<void> };
  /** The clock of quarantine items and allow-list entries (tests). */
  readonly now?: () => number;
  readonly firstFailureFlushMs?: number;
  /** false: do not migrate on open (`sandgate state status` reads what is there). */
  readonly migrate?: boolean;
}

/** What `sandgate state status` and /readyz read from a PostgreSQL state. */
export interface PostgresStatePorts extends StatePorts {
  readonly backend: 'postgresql';
  readonly pool: pg.Pool;
  readonly quarantine: PgQuarantineStore;
  /** One round trip (SELECT 1) within the query timeout: the database answers. */
  ping(): Promise<boolean>;
  status(now: number): Promise<PgStateStatus>;
}

export interface PgStateStatus {
  readonly url: string;
  readonly schemaVersion: number;
  readonly knownVersion: number;
  readonly rows: Record<string, number>;
  /** Age (ms) of the oldest in-flight lease, if any. */
  readonly oldestLeaseMs: number | undefined;
  readonly fingerprints: StoredFingerprints;
}

/**
 * Every state port but the relay queue in PostgreSQL, shared by every node on the database:
 * a bounded pool (state.pool.max) whose 'error' events are logged, migrations applied at open under
 * an advisory lock on a dedicated connection. The relay queue stays local (options.relayQueue).
 */
export async function openPostgresState(
  connection: PgConnection,
  options: PostgresStateOptions,
): Promise<PostgresStatePorts> {
  if (options.migrate !== false) await migratePg(connection, options.log);
  const pool = openPool(connection, options.log);
  const firstFailures = new PgFirstFailureStore(pool, options.firstFailureFlushMs);
  const listener = new PgListener(connection, options.log);
  const ports = {
    verdicts: new PgVerdictStore(pool),
    inflight: new PgInflightStore(pool, listener),
    cluster: new PgClusterStore(pool),
    scannerVersions: new PgScannerVersionStore(pool),
    ptTasks: new PgPtTaskStore(pool),
    ptLoad: new PgPtLoadStore(pool),
    quarantine: new PgQuarantineStore(pool, options.now),
    allowList: new PgAllowList(pool, options.now),
  };
  let relay: { readonly store: RelayQueueStore; close(): Promise<void> } | undefined;
  let closed: Promise<void> | undefined;
  return {
    backend: 'postgresql',
    pool,
    get verdicts(): VerdictStore {
      return ports.verdicts;
    },
    get inflight(): InflightStore {
      return ports.inflight;
    },
    get firstFailures(): FirstFailureStore {
      return firstFailures;
    },
    get scannerVersions(): ScannerVersionStore {
      return ports.scannerVersions;
    },
    get ptTasks(): PtTaskStore {
      return ports.ptTasks;
    },
    get ptLoad(): PtLoadStore {
      return ports.ptLoad;
    },
    get quarantine(): PgQuarantineStore & QuarantineStore {
      return ports.quarantine;
    },
    get cluster(): ClusterStore {
      return ports.cluster;
    },
    get allowList(): AllowList {
      return ports.allowList;
    },
    get relayQueue(): RelayQueueStore {
      relay ??= options.relayQueue();
      return relay.store;
    },
    async ping(): Promise<boolean> {
      try {
        await pool.query('SELECT 1');
        return true;
      } catch {
        return false;
      }
    },
    async status(now: number): Promise<PgStateStatus> {
      const rows: Record<string, number> = {};
      for (const t of PG_TABLES) {
        rows[t] = (await pool.query<{ n: number }>(`SELECT count(*) AS n FROM ${t}`)).rows[0]?.n ?? 0;
      }
      const lease = await pool.query<{ oldest: number | null }>(
        'SELECT min(started_at) AS oldest FROM inflight_scan',
      );
      const oldest = lease.rows[0]?.oldest ?? null;
      const mark = await pool.query<{ value: string }>(
        'SELECT value FROM cluster_fingerprint WHERE name = $1',
        [MARK_KEY_FINGERPRINT],
      );
      const tokens = await pool.query<{ token_fp: string; n: number; leased: number }>(
        `SELECT token_fp, count(*) AS n, count(*) FILTER (WHERE lease_until > $1) AS leased FROM pt_task
         WHERE scan_id IS NOT NULL AND token_fp IS NOT NULL GROUP BY token_fp ORDER BY token_fp COLLATE "C"`,
        [now],
      );
      return {
        fingerprints: {
          markKey: mark.rows[0]?.value,
          ptTokens: tokens.rows.map((r) => ({ fingerprint: r.token_fp, tasks: r.n, leased: r.leased })),
        },
        url: connection.display,
        schemaVersion: await pgSchemaVersion(pool),
        knownVersion: PG_SCHEMA_VERSION,
        rows,
        oldestLeaseMs: oldest === null ? undefined : Math.max(0, now - oldest),
      };
    },
    close(): Promise<void> {
      closed ??= (async () => {
        try {
          await firstFailures.close().catch((err: unknown) => {
            options.log.warn(
              { event: 'state.flush_failed', err },
              'could not write the batched first-failure clears',
            );
          });
          await relay?.close();
          await listener.close();
        } finally {
          await pool.end();
        }
      })();
      return closed;
    },
  };
}

/** Wraps a failure to reach PostgreSQL at open with the URL (no password). */
export function stateUnavailable(connection: PgConnection, cause: unknown): SandgateError {
  return new SandgateError('ERR_STATE_DB', `the state database ${connection.display} cannot be reached`, {
    cause,
    details: { url: connection.display },
  });
}
