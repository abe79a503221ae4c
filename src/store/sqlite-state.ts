import { join } from 'node:path';
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
import { SqliteAllowList } from './allow-list.js';
import { SqliteClusterStore } from './cluster.js';
import { openStateDb } from './db.js';
import { SqlitePtLoadStore } from './pt-load.js';
import { SqlitePtTaskStore } from './pt-tasks.js';
import { SqliteQuarantineStore } from './quarantine-store.js';
import { SqliteRelayQueueStore, type QueueFileWriter } from './relay-queue.js';
import { SqliteScannerVersionStore } from './scanner-versions.js';
import { SqliteFirstFailureStore, SqliteInflightStore, SqliteVerdictStore } from './verdict-store.js';

export interface SqliteStateOptions {
  /** Where quarantined messages are kept (quarantine.dir); default `<stateDir>/quarantine`. */
  readonly quarantineDir?: string;
  /** The relay queue's directory (relay.queue.dir); default `<stateDir>/queue`. */
  readonly queueDir?: string;
  /** The clock of quarantine items and allow-list entries (tests). */
  readonly now?: () => number;
  /** Tests: the writer of relay queue files (a failing disk). */
  readonly queueWriter?: QueueFileWriter;
  /** How often batched first-failure clears are written (ms); default 1 s. */
  readonly firstFailureFlushMs?: number;
}

/**
 * The whole state of one host in SQLite: one database connection (`<stateDir>/sandgate.db`,
 * migrated on open) behind every state port, plus the files the quarantine and the relay queue
 * keep beside it. Each port is built on first use, so a command that needs one table creates no
 * directory it does not use. close() writes the batched first-failure clears, then closes the
 * database; no port may be used after it.
 */
export function openSqliteState(stateDir: string, options: SqliteStateOptions = {}): StatePorts {
  const db = openStateDb(stateDir);
  let firstFailures: SqliteFirstFailureStore | undefined;
  const ports = {
    verdicts: lazy(() => new SqliteVerdictStore(db)),
    inflight: lazy(() => new SqliteInflightStore(db)),
    firstFailures: lazy(() => (firstFailures = new SqliteFirstFailureStore(db, options.firstFailureFlushMs))),
    scannerVersions: lazy(() => new SqliteScannerVersionStore(db)),
    ptTasks: lazy(() => new SqlitePtTaskStore(db)),
    ptLoad: lazy(() => new SqlitePtLoadStore(db)),
    cluster: lazy(() => new SqliteClusterStore(db)),
    quarantine: lazy(
      () => new SqliteQuarantineStore(db, options.quarantineDir ?? join(stateDir, 'quarantine'), options.now),
    ),
    allowList: lazy(() => new SqliteAllowList(db, options.now)),
    relayQueue: lazy(
      () =>
        new SqliteRelayQueueStore(
          db,
          options.queueDir ?? join(stateDir, 'queue'),
          options.queueWriter !== undefined ? { writer: options.queueWriter } : {},
        ),
    ),
  };
  let closed: Promise<void> | undefined;
  return {
    get verdicts(): VerdictStore {
      return ports.verdicts();
    },
    get inflight(): InflightStore {
      return ports.inflight();
    },
    get firstFailures(): FirstFailureStore {
      return ports.firstFailures();
    },
    get scannerVersions(): ScannerVersionStore {
      return ports.scannerVersions();
    },
    get ptTasks(): PtTaskStore {
      return ports.ptTasks();
    },
    get ptLoad(): PtLoadStore {
      return ports.ptLoad();
    },
    get cluster(): ClusterStore {
      return ports.cluster();
    },
    get quarantine(): QuarantineStore {
      return ports.quarantine();
    },
    get allowList(): AllowList {
      return ports.allowList();
    },
    get relayQueue(): RelayQueueStore {
      return ports.relayQueue();
    },
    close(): Promise<void> {
      closed ??= (async () => {
        try {
          firstFailures?.close();
        } finally {
          db.close();
        }
      })();
      return closed;
    },
  };
}

/** Builds the value on the first call and returns the same one after. */
function lazy<T>(make: () => T): () => T {
  let value: T | undefined;
  return () => (value ??= make());
}
