import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SandgateError } from '../core/errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';

export type StateDb = Database.Database;

export const STATE_DB_FILE = 'sandgate.db';

/**
 * Opens (creating if needed) the one state database shared by the helper, the relay and the CLI:
 * WAL so readers never block the writer, a busy timeout so several processes can share it.
 */
export function openStateDb(stateDir: string, options: { busyTimeoutMs?: number } = {}): StateDb {
  let db: StateDb;
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o750 });
    db = new Database(join(stateDir, STATE_DB_FILE));
    const busyTimeoutMs = Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000));
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    enableWal(db, busyTimeoutMs);
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
  } catch (cause) {
    throw new SandgateError('ERR_STATE_DB', `cannot open the state database in ${stateDir}`, {
      cause,
      details: { stateDir },
    });
  }
  try {
    migrate(db, MIGRATIONS);
  } catch (cause) {
    db.close();
    throw new SandgateError('ERR_STATE_DB', `cannot migrate the state database in ${stateDir}`, {
      cause,
      details: { stateDir },
    });
  }
  return db;
}

/**
 * Switches to WAL (persistent in the file, so usually a no-op). Two processes creating the database
 * at the same moment can get SQLITE_BUSY here without SQLite's busy handler being consulted, so
 * retry within the busy timeout.
 */
function enableWal(db: StateDb, busyTimeoutMs: number): void {
  const giveUpAt = Date.now() + busyTimeoutMs;
  for (let wait = 5; ; wait = Math.min(wait * 2, 100)) {
    try {
      if (db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL');
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= giveUpAt) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    }
  }
}

export function schemaVersion(db: StateDb): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/** Applies every migration newer than the database's user_version, each in its own transaction. */
export function migrate(db: StateDb, migrations: readonly Migration[]): void {
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    const apply = db.transaction(() => {
      // Re-read inside the write transaction: another process may have migrated meanwhile.
      if (schemaVersion(db) >= m.version) return;
      db.exec(m.sql);
      m.backfill?.(db);
      db.pragma(`user_version = ${m.version}`);
    });
    apply.immediate();
  }
}
