import { createReadStream } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { schemaVersion, type StateDb } from './db.js';
import { fromRow, type QuarantineRow } from './quarantine-row.js';
import { ArchiveWriter, ARCHIVE_TABLES, type ArchiveTable } from './state-archive.js';

/** Which rows of each table are worth moving (what `sandgate state import` copies from a stateDir too). */
export const EXPORT_SELECT: Readonly<Record<ArchiveTable, string>> = {
  verdict_cache: 'SELECT * FROM verdict_cache WHERE expires_at > ?',
  first_failure: 'SELECT * FROM first_failure',
  scanner_version: 'SELECT * FROM scanner_version',
  pt_task: 'SELECT * FROM pt_task WHERE scan_id IS NOT NULL',
  allow_hash: 'SELECT * FROM allow_hash',
};

export type ExportCounts = Record<ArchiveTable | 'quarantine', number>;

/**
 * `sandgate state export`: writes a single host's SQLite state (unexpired cached verdicts, first
 * failures, scanner versions, PT Sandbox tasks with a scan id, the allow list, and every quarantine
 * item with its gzipped message as it is) to `file`, read in one SQLite read transaction (a
 * consistent snapshot) and written through a temporary name: the file appears complete or not at
 * all. Memory stays bounded: rows are streamed, messages copied piece by piece.
 */
export async function exportSqliteState(
  source: { readonly db: StateDb; readonly stateDir: string; readonly quarantineDir: string },
  file: string,
  now: number,
): Promise<ExportCounts> {
  const { db } = source;
  const counts = Object.fromEntries([...ARCHIVE_TABLES, 'quarantine'].map((t) => [t, 0])) as ExportCounts;
  const writer = new ArchiveWriter(file, {
    createdAt: now,
    source: { stateDir: source.stateDir, schemaVersion: schemaVersion(db), host: hostname() },
  });
  db.exec('BEGIN');
  try {
    for (const t of ARCHIVE_TABLES) {
      const params = t === 'verdict_cache' ? [now] : [];
      for (const row of db.prepare(EXPORT_SELECT[t]).iterate(...params) as Iterable<
        Record<string, unknown>
      >) {
        await writer.row(t, row);
        counts[t]++;
      }
    }
    for (const row of db
      .prepare('SELECT * FROM quarantine ORDER BY created_at, id')
      .iterate() as Iterable<QuarantineRow>) {
      const item = fromRow(row);
      await writer.quarantine(item, createReadStream(join(source.quarantineDir, item.file)));
      counts.quarantine++;
    }
    await writer.finish();
    return counts;
  } catch (err) {
    await writer.abort();
    throw err;
  } finally {
    db.exec('COMMIT');
  }
}
