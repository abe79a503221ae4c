import type { Migration } from '../migrations.js';

/**
 * Versioned schema migrations of the PostgreSQL state, applied in order, each once, in its own
 * transaction, under a session advisory lock (./db.ts). Append new entries; never edit or reorder
 * one that has shipped. Times are epoch milliseconds (BIGINT), as in the SQLite schema.
 */
export const PG_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'verdict cache, leases, first failures, scanner versions, pt sandbox tasks and load, allow list',
    sql: `
      CREATE TABLE verdict_cache (
        scanner         TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        content_key     TEXT NOT NULL,
        finding         TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        expires_at      BIGINT NOT NULL,
        scanner_version TEXT,
        PRIMARY KEY (scanner, fingerprint, content_key)
      );
      CREATE INDEX verdict_cache_expires ON verdict_cache (expires_at);
      CREATE TABLE inflight_scan (
        scanner     TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        content_key TEXT NOT NULL,
        owner       TEXT NOT NULL,
        started_at  BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL,
        PRIMARY KEY (scanner, fingerprint, content_key)
      );
      CREATE TABLE first_failure (
        content_key TEXT PRIMARY KEY,
        first_at    BIGINT NOT NULL,
        last_at     BIGINT NOT NULL
      );
      CREATE INDEX first_failure_last ON first_failure (last_at);
      CREATE TABLE scanner_version (
        scanner    TEXT PRIMARY KEY,
        version    TEXT NOT NULL,
        checked_at BIGINT NOT NULL
      );
      CREATE TABLE pt_task (
        content_key    TEXT NOT NULL,
        fingerprint    TEXT NOT NULL,
        scan_id        TEXT,
        mode           TEXT NOT NULL,
        owner          TEXT NOT NULL,
        submitted_at   BIGINT NOT NULL,
        last_polled_at BIGINT,
        PRIMARY KEY (content_key, fingerprint)
      );
      CREATE INDEX pt_task_submitted ON pt_task (submitted_at);
      CREATE TABLE pt_task_history (
        scan_id      TEXT NOT NULL,
        owner        TEXT NOT NULL,
        submitted_at BIGINT NOT NULL,
        finished_at  BIGINT NOT NULL,
        outcome      TEXT NOT NULL
      );
      CREATE INDEX pt_task_history_finished ON pt_task_history (finished_at);
      CREATE TABLE pt_process (
        owner           TEXT PRIMARY KEY,
        front_end       TEXT NOT NULL,
        inflight        INTEGER NOT NULL,
        waiting         INTEGER NOT NULL,
        window_limit    DOUBLE PRECISION NOT NULL,
        window_max      INTEGER NOT NULL,
        submitted_total BIGINT NOT NULL,
        refused_total   BIGINT NOT NULL,
        started_at      BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL
      );
      CREATE TABLE allow_hash (
        sha256        TEXT PRIMARY KEY,
        added_at      BIGINT NOT NULL,
        added_by      TEXT NOT NULL,
        quarantine_id TEXT,
        note          TEXT
      );
    `,
  },
  {
    version: 2,
    name: 'quarantine: the index and the gzipped messages in chunks',
    sql: `
      CREATE TABLE quarantine (
        id          TEXT PRIMARY KEY,
        msg_id      TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
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
        size        BIGINT NOT NULL,
        stored_size BIGINT NOT NULL,
        file        TEXT NOT NULL,
        released_at BIGINT,
        released_by TEXT,
        released_to TEXT
      );
      CREATE INDEX quarantine_created ON quarantine (created_at);
      CREATE INDEX quarantine_content ON quarantine (content_key);
      CREATE TABLE quarantine_chunk (
        id   TEXT NOT NULL REFERENCES quarantine (id) ON DELETE CASCADE,
        seq  INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (id, seq)
      );
      ALTER TABLE quarantine_chunk ALTER COLUMN data SET STORAGE EXTERNAL;
    `,
  },
  {
    version: 3,
    name: 'cluster: token fingerprint and owner lease of pt tasks, shared fingerprints, job leases',
    sql: `
      ALTER TABLE pt_task ADD COLUMN token_fp TEXT;
      ALTER TABLE pt_task ADD COLUMN lease_until BIGINT;
      CREATE INDEX pt_task_owner ON pt_task (owner);
      CREATE TABLE cluster_fingerprint (
        name       TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE TABLE cluster_job (
        job         TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        lease_until BIGINT NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'quarantine: the decoded subject (display) and its folded form (search)',
    sql: `
      ALTER TABLE quarantine ADD COLUMN subject_text TEXT;
      ALTER TABLE quarantine ADD COLUMN subject_fold TEXT;
    `,
  },
];

/** The tables `sandgate state status` counts. */
export const PG_TABLES = [
  'verdict_cache',
  'inflight_scan',
  'first_failure',
  'scanner_version',
  'pt_task',
  'pt_task_history',
  'pt_process',
  'allow_hash',
  'quarantine',
  'quarantine_chunk',
  'cluster_fingerprint',
  'cluster_job',
] as const;
