import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import type { StateDb } from '../db.js';
import { fromRow, type QuarantineRow } from '../quarantine-row.js';
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

/**
 * `sandgate state import`: copies one host's SQLite state (stateDir, the quarantine directory)
 * into PostgreSQL, directly (no intermediate file): unexpired cached verdicts, first failures,
 * scanner versions, PT Sandbox tasks, the allow list, and every quarantine item with its gzipped
 * message as it is. Rows already present in PostgreSQL win (ON CONFLICT DO NOTHING), so it can be
 * run again after an interruption. The relay queue is not copied: it stays on its node.
 */
export async function importSqliteState(
  source: { readonly db: StateDb; readonly quarantineDir: string },
  pool: pg.Pool,
  quarantine: PgQuarantineStore,
  now: number,
): Promise<ImportCounts> {
  const { db } = source;
  const counts: ImportCounts = {
    verdicts: 0,
    firstFailures: 0,
    scannerVersions: 0,
    ptTasks: 0,
    allowList: 0,
    quarantine: 0,
    quarantineSkipped: 0,
  };
  const copy = async (
    select: string,
    insert: string,
    columns: string[],
    params: unknown[] = [],
  ): Promise<number> => {
    const rows = db.prepare(select).all(...params) as Array<Record<string, unknown>>;
    let n = 0;
    await inTransaction(pool, async (c) => {
      for (const r of rows) {
        const res = await c.query(
          insert,
          columns.map((k) => r[k] ?? null),
        );
        n += res.rowCount ?? 0;
      }
    });
    return n;
  };
  counts.verdicts = await copy(
    'SELECT * FROM verdict_cache WHERE expires_at > ?',
    `INSERT INTO verdict_cache (scanner, fingerprint, content_key, finding, created_at, expires_at, scanner_version)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
    ['scanner', 'fingerprint', 'content_key', 'finding', 'created_at', 'expires_at', 'scanner_version'],
    [now],
  );
  counts.firstFailures = await copy(
    'SELECT * FROM first_failure',
    'INSERT INTO first_failure (content_key, first_at, last_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
    ['content_key', 'first_at', 'last_at'],
  );
  counts.scannerVersions = await copy(
    'SELECT * FROM scanner_version',
    'INSERT INTO scanner_version (scanner, version, checked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
    ['scanner', 'version', 'checked_at'],
  );
  const ptColumns = (db.prepare('PRAGMA table_info(pt_task)').all() as Array<{ name: string }>).map(
    (c) => c.name,
  );
  const ptCopied = [
    'content_key',
    'fingerprint',
    'scan_id',
    'mode',
    'owner',
    'submitted_at',
    'last_polled_at',
  ].concat(['token_fp', 'lease_until'].filter((c) => ptColumns.includes(c)));
  counts.ptTasks = await copy(
    'SELECT * FROM pt_task WHERE scan_id IS NOT NULL',
    `INSERT INTO pt_task (${ptCopied.join(', ')}) VALUES (${ptCopied.map((_, i) => `$${i + 1}`).join(', ')})
     ON CONFLICT DO NOTHING`,
    ptCopied,
  );
  counts.allowList = await copy(
    'SELECT * FROM allow_hash',
    `INSERT INTO allow_hash (sha256, added_at, added_by, quarantine_id, note) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT DO NOTHING`,
    ['sha256', 'added_at', 'added_by', 'quarantine_id', 'note'],
  );
  for (const row of db
    .prepare('SELECT * FROM quarantine ORDER BY created_at, id')
    .iterate() as Iterable<QuarantineRow>) {
    const item = fromRow(row);
    if (!/^\d{4}-\d{2}-\d{2}\/[\w.-]+\.eml\.gz$/.test(item.file)) {
      throw new Error(`quarantine item ${item.id}: file name not understood: ${item.file}`);
    }
    const copied = await quarantine.importItem(item, createReadStream(join(source.quarantineDir, item.file)));
    if (copied) counts.quarantine++;
    else counts.quarantineSkipped++;
  }
  return counts;
}
