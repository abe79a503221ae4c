/**
 * `sandgate state export --out FILE` on a single host's SQLite state and `sandgate state import
 * --from FILE` into PostgreSQL on another "node", both as real processes: the cache, tasks, allow
 * list and quarantine (with the exact message bytes) arrive; a truncated, altered, foreign or
 * newer-version file is refused with a code naming the file, and imports nothing.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/core/logger.js';
import { SUSPICIOUS_DECISION as decision, readAll as collect } from '../support/quarantine-items.js';
import { BufferMessage } from '../../src/mime/spool.js';
import { openPostgresState } from '../../src/store/pg-state.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { runSandgate, type CliResult } from '../support/cli.js';
import { testConnection } from '../support/pg-backend.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { tempDir } from '../support/tmp.js';

let server: TestPostgres | undefined;
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await server?.stop();
});

function writeConfig(dir: string, name: string, content: object): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, JSON.stringify(content));
  return file;
}

/** The lines of an export, changed by `edit`, gzipped again. */
function rewrite(file: string, out: string, edit: (lines: string[]) => void): string {
  const lines = gunzipSync(readFileSync(file)).toString('utf8').split('\n');
  edit(lines);
  writeFileSync(out, gzipSync(Buffer.from(lines.join('\n'))));
  return out;
}

describe('sandgate state export and import --from FILE', () => {
  it('moves cache, tasks, allow list and quarantine bytes; refuses bad files whole', async () => {
    if (server === undefined) throw new Error('not started');
    const s = server;
    const dir = tempDir('sg-export-');
    const oldState = join(dir, 'old-state');
    const now = Date.now();
    // Incompressible, several pieces of the archive: the bytes must come back exactly.
    const big = Buffer.concat([
      Buffer.from('Subject: big\r\n\r\n'),
      Buffer.from(randomBytes(900 * 1024).toString('base64')),
    ]);
    const small = Buffer.from('Subject: q\r\n\r\nquarantined\r\n');
    const sqlite = openSqliteState(oldState, { now: () => now });
    try {
      await sqlite.verdicts.put(
        { scanner: 'rules', fingerprint: 'f', contentKey: 'k'.repeat(64) },
        { finding: { kind: 'clean' }, version: '1' },
        now,
        now + 3_600_000,
      );
      await sqlite.allowList.add(['a'.repeat(64)], 'op');
      await sqlite.scannerVersions.put('pt-sandbox', '5.1', now);
      const claim = await sqlite.ptTasks.claim('t'.repeat(64), 'fp', {
        mode: 'analysis',
        owner: 'old-host:1',
        now,
        maxTaskAgeMs: 900_000,
        claimTimeoutMs: 60_000,
        tokenFingerprint: '0123456789abcdef',
        leaseUntil: now + 30_000,
      });
      expect(claim.claimed).toBe(true);
      await sqlite.ptTasks.setScanId('t'.repeat(64), 'fp', 'old-host:1', 'scan-1', now);
      for (const [id, body] of [
        ['q-small', small],
        ['q-big', big],
      ] as const) {
        await sqlite.quarantine.put({
          message: new BufferMessage(
            id,
            { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' },
            body,
          ),
          contentKey: id.padEnd(64, '0'),
          decision,
          outcomes: [],
        });
      }
    } finally {
      await sqlite.close();
    }

    // The old host: export.
    const oldConfig = writeConfig(dir, 'old', { stateDir: oldState });
    const archive = join(dir, 'state.sgx');
    const exported = await runSandgate(['state', 'export', '--config', oldConfig, '--out', archive]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(JSON.parse(exported.stdout)).toMatchObject({
      verdict_cache: 1,
      allow_hash: 1,
      scanner_version: 1,
      pt_task: 1,
      quarantine: 2,
    });
    // It does not overwrite.
    const again = await runSandgate(['state', 'export', '--config', oldConfig, '--out', archive]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('[ERR_BAD_REQUEST]');

    // The cluster node: its own (empty) database.
    const database = await s.createDatabase();
    const newConfig = writeConfig(dir, 'new', {
      stateDir: join(dir, 'new-state'),
      state: { url: `postgres://${s.user}@${s.host}:${s.port}/${database}`, tls: 'disable' },
    });
    const importFrom = (file: string): Promise<CliResult> =>
      runSandgate(['state', 'import', '--config', newConfig, '--from', file]);
    const rowsInDb = async (): Promise<number> => {
      const c = new pg.Client({ host: s.host, port: s.port, user: s.user, database });
      c.on('error', () => undefined);
      await c.connect();
      try {
        const exists = await c.query<{ t: string | null }>("SELECT to_regclass('quarantine')::text AS t");
        if (exists.rows[0]?.t === null) return 0;
        const r = await c.query<{ n: string }>(
          'SELECT (SELECT count(*) FROM quarantine) + (SELECT count(*) FROM verdict_cache) + (SELECT count(*) FROM allow_hash) AS n',
        );
        return Number(r.rows[0]?.n);
      } finally {
        await c.end();
      }
    };
    const refused = async (file: string, code: string): Promise<void> => {
      const r = await importFrom(file);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`[${code}]`);
      expect(r.stderr).toContain(file);
      expect(await rowsInDb()).toBe(0);
    };

    const full = readFileSync(archive);
    // Truncated: the copy stopped half-way (the gzip stream ends early).
    const truncated = join(dir, 'truncated.sgx');
    writeFileSync(truncated, full.subarray(0, Math.floor(full.length / 2)));
    await refused(truncated, 'ERR_STATE_ARCHIVE');
    // Truncated at a line boundary: a valid gzip, but the end record is missing.
    await refused(
      rewrite(archive, join(dir, 'cut.sgx'), (lines) => lines.splice(lines.length - 5)),
      'ERR_STATE_ARCHIVE',
    );
    // Altered: one byte of a quarantined message (still valid JSON and base64).
    await refused(
      rewrite(archive, join(dir, 'altered.sgx'), (lines) => {
        const i = lines.findIndex((l) => l.startsWith('{"t":"data"'));
        const line = lines[i] ?? '';
        const at = line.indexOf('"b64":"') + 10;
        lines[i] = line.slice(0, at) + (line[at] === 'A' ? 'B' : 'A') + line.slice(at + 1);
      }),
      'ERR_STATE_ARCHIVE',
    );
    // Another format version.
    await refused(
      rewrite(archive, join(dir, 'v99.sgx'), (lines) => {
        lines[0] = (lines[0] ?? '').replace('"version":1', '"version":99');
      }),
      'ERR_STATE_ARCHIVE_VERSION',
    );
    // Not an export at all.
    const foreign = join(dir, 'foreign.sgx');
    writeFileSync(foreign, 'hello\n');
    await refused(foreign, 'ERR_STATE_ARCHIVE');

    // The real thing.
    const imported = await importFrom(archive);
    expect(imported.code, imported.stderr).toBe(0);
    expect(JSON.parse(imported.stdout)).toMatchObject({
      verdicts: 1,
      allowList: 1,
      scannerVersions: 1,
      ptTasks: 1,
      quarantine: 2,
      quarantineSkipped: 0,
    });
    const state = await openPostgresState(
      { ...testConnection(s), database },
      {
        log: silentLogger,
        migrate: false,
        relayQueue: () => {
          throw new Error('no relay queue here');
        },
      },
    );
    try {
      expect(
        await state.verdicts.get({ scanner: 'rules', fingerprint: 'f', contentKey: 'k'.repeat(64) }, now),
      ).toEqual({ finding: { kind: 'clean' }, version: '1' });
      expect(await state.allowList.has('a'.repeat(64))).toBe(true);
      expect(await state.ptTasks.get('t'.repeat(64), 'fp')).toMatchObject({
        scanId: 'scan-1',
        tokenFingerprint: '0123456789abcdef',
      });
      expect(
        (await collect(state.quarantine.openOriginal(await state.quarantine.get('q-big')))).equals(big),
      ).toBe(true);
      expect(
        (await collect(state.quarantine.openOriginal(await state.quarantine.get('q-small')))).equals(small),
      ).toBe(true);
    } finally {
      await state.close();
    }

    // Again: nothing doubled, the items already there are kept.
    const twice = await importFrom(archive);
    expect(twice.code, twice.stderr).toBe(0);
    expect(JSON.parse(twice.stdout)).toMatchObject({ verdicts: 0, quarantine: 0, quarantineSkipped: 2 });
    expect(existsSync(`${archive}.tmp`)).toBe(false);
  }, 120_000);
});
