import type { AllowList } from '../core/ports.js';
import type { AllowedHash } from '../core/state-records.js';
import type { StateDb } from './db.js';

/** The allowlist kept in the state database (table allow_hash, migration 4), shared by every process. */
export class SqliteAllowList implements AllowList {
  private readonly hasStmt;
  private readonly revStmt;
  private readonly addStmt;

  constructor(
    private readonly db: StateDb,
    private readonly now: () => number = Date.now,
  ) {
    this.hasStmt = db.prepare<[string], { one: number }>('SELECT 1 AS one FROM allow_hash WHERE sha256 = ?');
    this.revStmt = db.prepare<[], { n: number; last: number | null }>(
      'SELECT COUNT(*) AS n, MAX(added_at) AS last FROM allow_hash',
    );
    this.addStmt = db.prepare(
      `INSERT OR IGNORE INTO allow_hash (sha256, added_at, added_by, quarantine_id, note)
       VALUES (@sha256, @addedAt, @addedBy, @quarantineId, @note)`,
    );
  }

  async has(sha256: string): Promise<boolean> {
    return this.hasStmt.get(sha256.toLowerCase()) !== undefined;
  }

  async revision(): Promise<string> {
    const r = this.revStmt.get();
    return `${r?.n ?? 0}.${r?.last ?? 0}`;
  }

  /** Adds hashes (already present ones are kept as they are); returns those that were new. */
  async add(
    hashes: readonly string[],
    by: string,
    options: { quarantineId?: string; note?: string } = {},
  ): Promise<string[]> {
    const added: string[] = [];
    const at = this.now();
    this.db.transaction(() => {
      for (const h of hashes) {
        const sha256 = h.toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(sha256)) throw new TypeError(`not a SHA-256 hex digest: ${h}`);
        const r = this.addStmt.run({
          sha256,
          addedAt: at,
          addedBy: by,
          quarantineId: options.quarantineId ?? null,
          note: options.note ?? null,
        });
        if (r.changes > 0) added.push(sha256);
      }
    })();
    return added;
  }

  async remove(sha256: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM allow_hash WHERE sha256 = ?').run(sha256.toLowerCase()).changes > 0;
  }

  async list(): Promise<AllowedHash[]> {
    const rows = this.db
      .prepare<
        [],
        {
          sha256: string;
          added_at: number;
          added_by: string;
          quarantine_id: string | null;
          note: string | null;
        }
      >('SELECT * FROM allow_hash ORDER BY added_at, sha256')
      .all();
    return rows.map((r) => ({
      sha256: r.sha256,
      addedAt: r.added_at,
      addedBy: r.added_by,
      ...(r.quarantine_id !== null ? { quarantineId: r.quarantine_id } : {}),
      ...(r.note !== null ? { note: r.note } : {}),
    }));
  }
}
