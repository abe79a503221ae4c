import { readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { StateDb } from './db.js';
import { PARTIAL } from './durable-file.js';
import type { SqliteRelayQueueStore } from './relay-queue.js';
import { QUEUE_FILE_SUFFIX, readPrepared } from './relay-queue-file.js';

/**
 * Start-up repair (before accepting): removes temporary files; indexes message files without a
 * row (the file is the durable record: a crash or power loss between the rename and the commit
 * may have lost the row; such a message may then be delivered although its client, cut off
 * before our 250, sends it again: a duplicate, never a loss); drops rows whose file is gone.
 */
export function recoverRelayQueue(
  store: SqliteRelayQueueStore,
  db: StateDb,
): { removedFiles: number; indexed: string[]; removedRows: string[] } {
  let removedFiles = 0;
  const names = new Set(readdirSync(store.dir));
  const rows = db.prepare<[], { id: string; file: string }>('SELECT id, file FROM relay_queue').all();
  const known = new Set(rows.map((r) => r.file));
  const indexed: string[] = [];
  for (const name of names) {
    if (name.endsWith(PARTIAL)) {
      rmSync(join(store.dir, name), { force: true });
      removedFiles++;
    } else if (name.endsWith(QUEUE_FILE_SUFFIX) && !known.has(name)) {
      const item = readPrepared(store.dir, name);
      if (item === undefined) {
        renameSync(join(store.dir, name), join(store.dir, `${name}.bad`));
        continue;
      }
      store.insertNow(item);
      indexed.push(item.id);
    }
  }
  const removedRows: string[] = [];
  for (const r of rows) {
    if (!names.has(r.file)) {
      store.removeNow(r.id);
      removedRows.push(r.id);
    }
  }
  store.countersFromStats();
  return { removedFiles, indexed, removedRows };
}
