import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStateDb, schemaVersion, type StateDb } from '../../../src/store/db.js';
import { ptTasksContract } from '../../contract/pt-tasks.js';
import { sqliteBackend } from './sqlite-backend.js';

ptTasksContract(sqliteBackend);

let dir: string;
let db: StateDb;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-ptt-'));
  db = openStateDb(dir);
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('PT Sandbox tables in SQLite', () => {
  it('migrations 3 (pt_task) and 7 (pt_process) are applied', () => {
    expect(schemaVersion(db)).toBeGreaterThanOrEqual(7);
  });
});
