import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import type { QuarantineItem } from '../../core/state-records.js';
import type { StateDb } from '../db.js';
import { fromRow, type QuarantineRow } from '../quarantine-row.js';
import { archiveError, ARCHIVE_TABLES, readArchive, type ArchiveTable } from '../state-archive.js';
import { EXPORT_SELECT } from '../state-export.js';
import type { PgQuarantineStore } from './quarantine.js';
import { inTransaction } from './stores.js';

export interface ImportCounts {
  verdicts: number;
  firstFailures: number;
  scannerVersions: number;
  ptTasks: number;
  allowList: number;
  quarantine: number;
  /** Quarantine items already in PostgreSQL (same id): left as they are. */
  quarantineSkipped: number;
}

/** How a row of each copied table goes into PostgreSQL; rows already there win. */
const INSERT: Readonly<Record<ArchiveTable, { readonly sql: string; readonly columns: readonly string[] }>> =
  {
    verdict_cache: {
      sql: `INSERT INTO verdict_cache (scanner, fingerprint, content_key, finding, created_at, expires_at, scanner_version)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
      columns: [
        'scanner',
        'fingerprint',
        'content_key',
        'finding',
        'created_at',
        'expires_at',
        'scanner_version',
      ],
    },
    first_failure: {
      sql: 'INSERT INTO first_failure (content_key, first_at, last_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      columns: ['content_key', 'first_at', 'last_at'],
    },
    scanner_version: {
      sql: 'INSERT INTO scanner_version (scanner, version, checked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      columns: ['scanner', 'version', 'checked_at'],
    },
    pt_task: {
      sql: `INSERT INTO pt_task (content_key, fingerprint, scan_id, mode, owner, submitted_at, last_polled_at, token_fp, lease_until)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
      columns: [
        'content_key',
        'fingerprint',
        'scan_id',
        'mode',
        'owner',
        'submitted_at',
        'last_polled_at',
        'token_fp',
        'lease_until',
      ],
    },
    allow_hash: {
      sql: `INSERT INTO allow_hash (sha256, added_at, added_by, quarantine_id, note) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT DO NOTHING`,
      columns: ['sha256', 'added_at', 'added_by', 'quarantine_id', 'note'],
    },
  };

const COUNT_KEY: Readonly<Record<ArchiveTable, keyof ImportCounts>> = {
  verdict_cache: 'verdicts',
  first_failure: 'firstFailures',
  scanner_version: 'scannerVersions',
  pt_task: 'ptTasks',
  allow_hash: 'allowList',
};

/** Rows per transaction when copying a table. */
const BATCH = 500;

const QUARANTINE_FILE = /^\d{4}-\d{2}-\d{2}\/[\w.-]+\.eml\.gz$/;

function emptyCounts(): ImportCounts {
  return {
    verdicts: 0,
    firstFailures: 0,
    scannerVersions: 0,
    ptTasks: 0,
    allowList: 0,
    quarantine: 0,
    quarantineSkipped: 0,
  };
}

/** Inserts rows of one table in transactions of BATCH rows; returns how many were new. */
async function insertRows(
  pool: pg.Pool,
  table: ArchiveTable,
  rows: ReadonlyArray<Record<string, unknown>>,
): Promise<number> {
  const { sql, columns } = INSERT[table];
  let n = 0;
  await inTransaction(pool, async (c) => {
    for (const r of rows)
      n +=
        (
          await c.query(
            sql,
            columns.map((k) => r[k] ?? null),
          )
        ).rowCount ?? 0;
  });
  return n;
}

/**
 * `sandgate state import --from DIR`: copies one host's SQLite state (stateDir, the quarantine
 * directory) into PostgreSQL, directly: unexpired cached verdicts, first failures, scanner
 * versions, PT Sandbox tasks, the allow list, and every quarantine item with its gzipped message
 * as it is. Rows already present in PostgreSQL win (ON CONFLICT DO NOTHING), so it can be run again
 * after an interruption. The relay queue is not copied: it stays on its node.
 */
export async function importSqliteState(
  source: { readonly db: StateDb; readonly quarantineDir: string },
  pool: pg.Pool,
  quarantine: PgQuarantineStore,
  now: number,
): Promise<ImportCounts> {
  const { db } = source;
  const counts = emptyCounts();
  for (const t of ARCHIVE_TABLES) {
    let batch: Array<Record<string, unknown>> = [];
    const params = t === 'verdict_cache' ? [now] : [];
    for (const row of db.prepare(EXPORT_SELECT[t]).iterate(...params) as Iterable<Record<string, unknown>>) {
      batch.push(row);
      if (batch.length >= BATCH) {
        counts[COUNT_KEY[t]] += await insertRows(pool, t, batch);
        batch = [];
      }
    }
    counts[COUNT_KEY[t]] += await insertRows(pool, t, batch);
  }
  for (const row of db.prepare('SELECT * FROM quarantine ORDER BY created_at, id').all() as QuarantineRow[]) {
    const item = fromRow(row);
    if (!QUARANTINE_FILE.test(item.file)) {
      throw new Error(`quarantine item ${item.id}: file name not understood: ${item.file}`);
    }
    const copied = await quarantine.importItem(item, createReadStream(join(source.quarantineDir, item.file)));
    if (copied) counts.quarantine++;
    else counts.quarantineSkipped++;
  }
  return counts;
}

/** What a complete check of an archive found (before anything is written). */
export type ArchiveCheck = Record<ArchiveTable | 'quarantine', number>;

/**
 * Reads the whole archive once and checks it (ERR_STATE_ARCHIVE / ERR_STATE_ARCHIVE_VERSION naming
 * the file and line), writing nothing: counts its records.
 */
export async function checkStateArchive(file: string): Promise<ArchiveCheck> {
  const found = Object.fromEntries([...ARCHIVE_TABLES, 'quarantine'].map((t) => [t, 0])) as ArchiveCheck;
  for await (const r of readArchive(file)) {
    if (r.t === 'quarantine') found.quarantine++;
    else if (r.t !== 'data' && r.t !== 'quarantine_end') found[r.t]++;
  }
  return found;
}

/**
 * `sandgate state import --from FILE` (a `sandgate state export`): first reads the whole file and
 * checks it (checkStateArchive), so a corrupt, truncated or foreign file imports nothing; then
 * reads it again and copies it: table rows in transactions of BATCH rows, each quarantine item
 * with its message in one transaction (all of it or nothing, its digest checked before the
 * commit). Rows already present win, so an import cut short (the database went away) completes when
 * run again.
 */
export async function importStateArchive(
  file: string,
  pool: pg.Pool,
  quarantine: PgQuarantineStore,
): Promise<ImportCounts & { checked: ArchiveCheck }> {
  const checked = await checkStateArchive(file);
  const counts = emptyCounts();
  const records = readArchive(file)[Symbol.asyncIterator]();
  let table: ArchiveTable | undefined;
  let batch: Array<Record<string, unknown>> = [];
  const flush = async (): Promise<void> => {
    if (table !== undefined && batch.length > 0)
      counts[COUNT_KEY[table]] += await insertRows(pool, table, batch);
    batch = [];
  };
  for (;;) {
    const next = await records.next();
    if (next.done === true) break;
    const r = next.value;
    if (r.t === 'quarantine') {
      await flush();
      table = undefined;
      let ended = false;
      // The message's pieces, pulled from the archive as the quarantine store writes them.
      async function* message(): AsyncGenerator<Buffer> {
        for (;;) {
          const piece = await records.next();
          if (piece.done === true) throw archiveError(file, 0, 'the file changed while it was imported');
          if (piece.value.t === 'quarantine_end') {
            ended = true;
            return;
          }
          if (piece.value.t !== 'data') throw archiveError(file, 0, 'the file changed while it was imported');
          yield piece.value.bytes;
        }
      }
      const item = r.item as unknown as QuarantineItem;
      const pieces = message();
      if (await quarantine.importItem(item, pieces)) counts.quarantine++;
      else counts.quarantineSkipped++;
      // An item already there is not read by importItem: skip its pieces.
      if (!ended) for await (const _ of pieces) void _;
      continue;
    }
    if (r.t === 'data' || r.t === 'quarantine_end')
      throw archiveError(file, 0, 'the file changed while it was imported');
    if (r.t !== table || batch.length >= BATCH) await flush();
    table = r.t;
    batch.push(r.row);
  }
  await flush();
  return { ...counts, checked };
}
