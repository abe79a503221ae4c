import type { ScannerVersionRecord, ScannerVersionStore } from '../core/ports.js';
import type { StateDb } from './db.js';

/** The last known version of each scanner (migration 6), shared by every process on the database. */
export class SqliteScannerVersionStore implements ScannerVersionStore {
  private readonly getStmt;
  private readonly putTx;

  constructor(db: StateDb) {
    this.getStmt = db.prepare<[string], { version: string; checked_at: number }>(
      'SELECT version, checked_at FROM scanner_version WHERE scanner = ?',
    );
    const upsert = db.prepare(
      `INSERT INTO scanner_version (scanner, version, checked_at) VALUES (?, ?, ?)
       ON CONFLICT (scanner) DO UPDATE SET version = excluded.version, checked_at = excluded.checked_at
       WHERE excluded.checked_at >= scanner_version.checked_at`,
    );
    this.putTx = db.transaction((scanner: string, version: string, checkedAt: number) => {
      const before = this.getStmt.get(scanner);
      upsert.run(scanner, version, checkedAt);
      return before?.version;
    });
  }

  async get(scanner: string): Promise<ScannerVersionRecord | undefined> {
    const row = this.getStmt.get(scanner);
    return row === undefined ? undefined : { version: row.version, checkedAt: row.checked_at };
  }

  async put(scanner: string, version: string, checkedAt: number): Promise<string | undefined> {
    return this.putTx.immediate(scanner, version, checkedAt);
  }
}
