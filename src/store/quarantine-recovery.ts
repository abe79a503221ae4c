import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { StateDb } from './db.js';
import { PARTIAL } from './durable-file.js';
import type { QuarantineRecord } from './quarantine-store.js';

/** Files younger than this may belong to a write still in progress in another process. */
const RECOVERY_GRACE_MS = 60_000;

/** What start-up recovery needs from the quarantine store. */
export interface QuarantineRecoveryTarget {
  readonly db: StateDb;
  readonly dir: string;
  readonly now: () => number;
  /** Inserts the index row of a complete item (ignored when it exists). */
  readonly index: (record: QuarantineRecord) => void;
}

/**
 * Start-up repair: indexes complete items whose row is missing (a crash after the files, before
 * the row), removes temporary files and message files without a sidecar older than a grace period.
 */
export function recoverQuarantine(store: QuarantineRecoveryTarget): { indexed: number; removed: number } {
  let indexed = 0;
  let removed = 0;
  const known = store.db.prepare<[string], { id: string }>('SELECT id FROM quarantine WHERE id = ?');
  const cutoff = store.now() - RECOVERY_GRACE_MS;
  for (const day of safeReaddir(store.dir)) {
    const dayDir = join(store.dir, day);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) continue;
    const names = new Set(safeReaddir(dayDir));
    for (const name of names) {
      const path = join(dayDir, name);
      const old = statSync(path).mtimeMs < cutoff;
      if (name.endsWith(PARTIAL)) {
        if (old) {
          rmSync(path, { force: true });
          removed++;
        }
      } else if (name.endsWith('.json')) {
        const record = JSON.parse(readFileSync(path, 'utf8')) as QuarantineRecord;
        if (!names.has(`${record.id}.eml.gz`)) {
          // A sidecar whose message file is gone (removed by hand): nothing to keep.
          if (old) {
            rmSync(path, { force: true });
            store.db.prepare('DELETE FROM quarantine WHERE id = ?').run(record.id);
            removed++;
          }
        } else if (known.get(record.id) === undefined) {
          store.index(record);
          indexed++;
        }
      } else if (name.endsWith('.eml.gz') && !names.has(name.replace(/\.eml\.gz$/, '.json')) && old) {
        rmSync(path, { force: true });
        removed++;
      }
    }
  }
  return { indexed, removed };
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
