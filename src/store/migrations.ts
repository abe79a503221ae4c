import type Database from 'better-sqlite3';
import { decodeHeaderText } from '../mime/header-text.js';

/**
 * Versioned schema migrations of the state database, applied in order, each once, inside a
 * transaction. Append new entries; never edit or reorder one that has shipped.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
  /** Fills what SQL cannot compute for existing rows; runs after `sql`, in the same transaction. */
  readonly backfill?: (db: Database.Database) => void;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'verdict cache, in-flight scans, first failures',
    sql: `
      CREATE TABLE verdict_cache (
        scanner     TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        content_key TEXT NOT NULL,
        finding     TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (scanner, fingerprint, content_key)
      );
      CREATE INDEX verdict_cache_expires ON verdict_cache (expires_at);
      CREATE TABLE inflight_scan (
        scanner     TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        content_key TEXT NOT NULL,
        owner       TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (scanner, fingerprint, content_key)
      );
      CREATE TABLE first_failure (
        content_key TEXT PRIMARY KEY,
        first_at    INTEGER NOT NULL,
        last_at     INTEGER NOT NULL
      );
      CREATE INDEX first_failure_last ON first_failure (last_at);
    `,
  },
  {
    version: 2,
    name: 'quarantine index',
    sql: `
      CREATE TABLE quarantine (
        id          TEXT PRIMARY KEY,
        msg_id      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        front_end   TEXT NOT NULL,
        sender      TEXT NOT NULL,
        recipients  TEXT NOT NULL,
        client      TEXT,
        helo        TEXT,
        subject     TEXT,
        verdict     TEXT NOT NULL,
        action      TEXT NOT NULL,
        reason      TEXT NOT NULL,
        threats     TEXT NOT NULL,
        outcomes    TEXT NOT NULL,
        content_key TEXT NOT NULL,
        size        INTEGER NOT NULL,
        stored_size INTEGER NOT NULL,
        file        TEXT NOT NULL,
        released_at INTEGER,
        released_by TEXT,
        released_to TEXT
      );
      CREATE INDEX quarantine_created ON quarantine (created_at);
      CREATE INDEX quarantine_content ON quarantine (content_key);
    `,
  },
  {
    version: 3,
    name: 'pt sandbox tasks in flight',
    sql: `
      CREATE TABLE pt_task (
        content_key    TEXT NOT NULL,
        fingerprint    TEXT NOT NULL,
        scan_id        TEXT,
        mode           TEXT NOT NULL,
        owner          TEXT NOT NULL,
        submitted_at   INTEGER NOT NULL,
        last_polled_at INTEGER,
        PRIMARY KEY (content_key, fingerprint)
      );
      CREATE INDEX pt_task_submitted ON pt_task (submitted_at);
    `,
  },
  {
    version: 4,
    name: 'attachment hash allowlist (released false positives)',
    sql: `
      CREATE TABLE allow_hash (
        sha256        TEXT PRIMARY KEY,
        added_at      INTEGER NOT NULL,
        added_by      TEXT NOT NULL,
        quarantine_id TEXT,
        note          TEXT
      );
    `,
  },
  {
    version: 5,
    name: 'relay queue (queue mode): messages and per-recipient delivery state',
    sql: `
      CREATE TABLE relay_queue (
        id              TEXT PRIMARY KEY,
        kind            TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        sender          TEXT NOT NULL,
        size            INTEGER NOT NULL,
        file            TEXT NOT NULL,
        data_offset     INTEGER NOT NULL,
        envelope        TEXT NOT NULL,
        scan            TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error      TEXT
      );
      CREATE INDEX relay_queue_due ON relay_queue (next_attempt_at);
      CREATE TABLE relay_queue_rcpt (
        queue_id   TEXT NOT NULL REFERENCES relay_queue (id) ON DELETE CASCADE,
        idx        INTEGER NOT NULL,
        address    TEXT NOT NULL,
        params     TEXT NOT NULL,
        state      TEXT NOT NULL,
        reply      TEXT,
        updated_at INTEGER,
        PRIMARY KEY (queue_id, idx)
      );
    `,
  },
  {
    version: 6,
    name: 'scanner versions: last known per scanner, and the version stored with each cached verdict',
    sql: `
      CREATE TABLE scanner_version (
        scanner    TEXT PRIMARY KEY,
        version    TEXT NOT NULL,
        checked_at INTEGER NOT NULL
      );
      ALTER TABLE verdict_cache ADD COLUMN scanner_version TEXT;
    `,
  },
  {
    version: 7,
    name: 'pt sandbox load: finished tasks (a bounded history) and each process window and queue',
    sql: `
      CREATE TABLE pt_task_history (
        scan_id      TEXT NOT NULL,
        owner        TEXT NOT NULL,
        submitted_at INTEGER NOT NULL,
        finished_at  INTEGER NOT NULL,
        outcome      TEXT NOT NULL
      );
      CREATE INDEX pt_task_history_finished ON pt_task_history (finished_at);
      CREATE TABLE pt_process (
        owner           TEXT PRIMARY KEY,
        front_end       TEXT NOT NULL,
        inflight        INTEGER NOT NULL,
        waiting         INTEGER NOT NULL,
        window_limit    REAL NOT NULL,
        window_max      INTEGER NOT NULL,
        submitted_total INTEGER NOT NULL,
        refused_total   INTEGER NOT NULL,
        started_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
      );
    `,
  },
  {
    version: 8,
    name: 'quarantine: the decoded subject (display and search), filled for existing items',
    sql: `ALTER TABLE quarantine ADD COLUMN subject_text TEXT;`,
    backfill(db) {
      const update = db.prepare('UPDATE quarantine SET subject_text = ? WHERE id = ?');
      const rows = db
        .prepare<[], { id: string; subject: string }>(
          'SELECT id, subject FROM quarantine WHERE subject IS NOT NULL',
        )
        .all();
      for (const r of rows) update.run(decodeHeaderText(r.subject), r.id);
    },
  },
  {
    version: 9,
    name: 'cluster: token fingerprint and owner lease of pt tasks, shared fingerprints, job leases',
    sql: `
      ALTER TABLE pt_task ADD COLUMN token_fp TEXT;
      ALTER TABLE pt_task ADD COLUMN lease_until INTEGER;
      CREATE INDEX pt_task_owner ON pt_task (owner);
      CREATE TABLE cluster_fingerprint (
        name       TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
      );
      CREATE TABLE cluster_job (
        job         TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        lease_until INTEGER NOT NULL
      );
    `,
  },
];
