import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BufferMessage } from '../../../src/mime/spool.js';
import { quarantineContract } from '../../contract/quarantine.js';
import { sqliteBackend } from './sqlite-backend.js';
import { tempDir } from '../../support/tmp.js';
import { openSqliteState } from '../../../src/store/sqlite-state.js';

quarantineContract(sqliteBackend);

describe('the quarantine in SQLite and files', () => {
  it('keeps each item as a gzipped message and a JSON sidecar; delete and retention remove both', async () => {
    const dir = tempDir();
    let now = Date.UTC(2025, 0, 1);
    const state = openSqliteState(dir, { now: () => now });
    try {
      const store = state.quarantine;
      const put = (id: string) =>
        store.put({
          message: new BufferMessage(
            id,
            { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' },
            Buffer.from('Subject: x\r\n\r\nx\r\n'),
          ),
          contentKey: id.padEnd(64, '0'),
          decision: {
            action: 'quarantine',
            keepCopy: true,
            verdict: 'suspicious',
            reason: 'suspicious',
            threats: [],
            failOpen: false,
          },
          outcomes: [],
        });
      await put('f1');
      await put('f2');
      const qdir = join(dir, 'quarantine', '2025-01-01');
      expect(readdirSync(qdir).sort()).toEqual(['f1.eml.gz', 'f1.json', 'f2.eml.gz', 'f2.json']);
      const f1 = await store.get('f1');
      expect(f1.file).toBe('2025-01-01/f1.eml.gz');
      await store.delete('f1');
      expect(existsSync(join(dir, 'quarantine', f1.file))).toBe(false);
      expect(readdirSync(qdir).sort()).toEqual(['f2.eml.gz', 'f2.json']);
      now += 2 * 86_400_000;
      expect(await store.enforceRetention({ maxAgeMs: 86_400_000, maxTotalBytes: 1e12 })).toEqual(['f2']);
      expect(readdirSync(qdir)).toEqual([]);
    } finally {
      await state.close();
    }
  });
});
