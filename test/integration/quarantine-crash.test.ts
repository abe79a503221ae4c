import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { QuarantineRecord } from '../../src/core/state-records.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { tempDir } from '../support/tmp.js';

const CHILD = join(import.meta.dirname, 'quarantine-crash-child.ts');

/** Starts the writer, waits until it has written `after` items, lets it run a random moment more, SIGKILLs it. */
async function writeAndKill(stateDir: string, after: number): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, stateDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.once('exit', (_c, sig) => resolve(sig)),
  );
  await new Promise<void>((resolve, reject) => {
    let seen = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      seen += (chunk.toString().match(/\n/g) ?? []).length;
      if (seen >= after) resolve();
    });
    child.once('exit', () => reject(new Error('writer ended before it was killed')));
  });
  // A random point inside the next writes (each takes a few ms): not a readiness wait.
  await new Promise((r) => setTimeout(r, Math.random() * 40));
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
}

describe('quarantine writes killed at random points', () => {
  it('leave no half item and no orphan after recover()', async () => {
    const stateDir = tempDir();
    for (let round = 0; round < 6; round++) await writeAndKill(stateDir, 1 + Math.floor(Math.random() * 4));

    // Recovery as a later start would run it, after the grace for writes in progress.
    const state = openSqliteState(stateDir, {
      quarantineDir: join(stateDir, 'quarantine'),
      now: () => Date.now() + 5 * 60_000,
    });
    try {
      const store = state.quarantine;
      await store.recover();
      const qdir = join(stateDir, 'quarantine');
      const files = readdirSync(qdir).flatMap((day) =>
        readdirSync(join(qdir, day)).map((f) => join(qdir, day, f)),
      );
      expect(files.filter((f) => f.endsWith('.partial'))).toEqual([]);
      const eml = files.filter((f) => f.endsWith('.eml.gz')).sort();
      const json = files.filter((f) => f.endsWith('.json')).sort();
      expect(eml.map((f) => f.replace(/\.eml\.gz$/, ''))).toEqual(json.map((f) => f.replace(/\.json$/, '')));
      expect(files).toHaveLength(eml.length + json.length);

      const rows = await store.list({ limit: 10_000 });
      expect(rows.map((r) => r.id).sort()).toEqual(
        json.map((f) => (JSON.parse(readFileSync(f, 'utf8')) as QuarantineRecord).id).sort(),
      );
      expect(rows.length).toBeGreaterThanOrEqual(6);
      for (const row of rows) {
        const bytes = gunzipSync(readFileSync(join(qdir, row.file)));
        expect(bytes.length).toBe(row.size);
        expect(bytes.toString('latin1')).toMatch(/^Subject: crash \d+\r\n\r\n[A-Za-z0-9+/=]+\r\n$/);
      }
      // A second recovery finds nothing to do.
      expect(await store.recover()).toEqual({ indexed: 0, removed: 0 });
    } finally {
      await state.close();
    }
  });
});
