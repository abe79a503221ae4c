import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { migrate, openStateDb, schemaVersion, STATE_DB_FILE } from '../../../src/store/db.js';
import { MIGRATIONS } from '../../../src/store/migrations.js';
import { SqliteQuarantineStore } from '../../../src/store/quarantine-store.js';
import { encodeSingleByte, SUBJECT } from '../../support/cyrillic-mail.js';
import { tempDir } from '../../support/tmp.js';

const KOI8_SUBJECT = `=?koi8-r?B?${encodeSingleByte('koi8-r', SUBJECT).toString('base64')}?=`;

function insertOld(db: Database.Database, id: string, subject: string | null, createdAt: number): void {
  db.prepare(
    `INSERT INTO quarantine (id, msg_id, created_at, front_end, sender, recipients, subject, verdict, action,
       reason, threats, outcomes, content_key, size, stored_size, file)
     VALUES (?, ?, ?, 'relay', 'a@example.org', '["b@example.net"]', ?, 'malicious', 'reject', 'malicious',
       '[]', '[]', 'k', 10, 10, ?)`,
  ).run(id, id, createdAt, subject, `2024-01-02/${id}.eml.gz`);
}

describe('the decoded subject in the quarantine index', () => {
  it('migration 8 fills it for items quarantined before it, and --subject finds them', async () => {
    const dir = tempDir();
    // A state database as the previous version left it: migrations up to 7, items with raw subjects.
    const old = new Database(join(dir, STATE_DB_FILE));
    migrate(
      old,
      MIGRATIONS.filter((m) => m.version <= 7),
    );
    expect(schemaVersion(old)).toBe(7);
    insertOld(old, 'sg-old-1', KOI8_SUBJECT, 1000);
    insertOld(old, 'sg-old-2', 'plain ascii', 2000);
    insertOld(old, 'sg-old-3', null, 3000);
    old.close();

    const db = openStateDb(dir);
    try {
      expect(schemaVersion(db)).toBeGreaterThanOrEqual(8);
      const store = new SqliteQuarantineStore(db, join(dir, 'quarantine'));
      expect((await store.get('sg-old-1')).subjectText).toBe(SUBJECT);
      expect((await store.get('sg-old-1')).subject).toBe(KOI8_SUBJECT);
      expect((await store.get('sg-old-2')).subjectText).toBe('plain ascii');
      expect((await store.get('sg-old-3')).subjectText).toBeUndefined();
      // Case-insensitive in Cyrillic, and ё found by е, as operators type it.
      expect((await store.list({ subject: 'СЧЕТ на' })).map((i) => i.id)).toEqual(['sg-old-1']);
      expect((await store.list({ subject: 'ASCII' })).map((i) => i.id)).toEqual(['sg-old-2']);
      expect(await store.list({ subject: '%' })).toEqual([]);
    } finally {
      db.close();
    }
  });
});
