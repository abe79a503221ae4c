/** The PostgreSQL state beyond the contracts: migrations, a 25 MB item, a dropped connection, a stopped server, import. */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/logger.js';
import { SUSPICIOUS_DECISION as decision, readAll as collect } from '../../support/quarantine-items.js';
import { BufferMessage } from '../../../src/mime/spool.js';
import { migratePg } from '../../../src/store/pg/db.js';
import { importSqliteState } from '../../../src/store/pg/import.js';
import { PG_MIGRATIONS } from '../../../src/store/pg/migrations.js';
import { openPostgresState } from '../../../src/store/pg-state.js';
import { openStateDb } from '../../../src/store/db.js';
import { openSqliteState } from '../../../src/store/sqlite-state.js';
import { freshSchema, testConnection } from '../../support/pg-backend.js';
import { startPostgres, type TestPostgres } from '../../support/postgres.js';
import { recorder } from '../../support/recording-logger.js';
import { tempDir } from '../../support/tmp.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

const noQueue = () => {
  throw new Error('no relay queue in this test');
};

describe('PostgreSQL state', () => {
  it('two migrators at once apply each migration once', async () => {
    const schema = await freshSchema(server);
    const c = testConnection(server, schema);
    const [a, b] = await Promise.all([migratePg(c, silentLogger), migratePg(c, silentLogger)]);
    const all = PG_MIGRATIONS.map((m) => m.version);
    expect([...a, ...b].sort()).toEqual(all);
    expect(a.length === 0 || b.length === 0).toBe(true);
    const admin = await server.admin();
    try {
      const r = await admin.query<{ version: number }>(
        `SELECT version FROM ${schema}.sandgate_schema ORDER BY version`,
      );
      expect(r.rows.map((x) => x.version)).toEqual(all);
    } finally {
      await admin.end();
    }
    expect(await migratePg(c, silentLogger)).toEqual([]);
  });

  it('keeps a 25 MB quarantine item in chunks and streams back the exact bytes', async () => {
    const schema = await freshSchema(server);
    const state = await openPostgresState(testConnection(server, schema), {
      log: silentLogger,
      relayQueue: noQueue,
    });
    try {
      // Random bytes do not compress: 25 MB stored, about 50 chunk rows.
      const bytes = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), randomBytes(25 * 1024 * 1024)]);
      const id = await state.quarantine.put({
        message: new BufferMessage(
          'big1',
          { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' },
          bytes,
        ),
        contentKey: 'b'.repeat(64),
        decision,
        outcomes: [],
      });
      const item = await state.quarantine.get(id);
      expect(item.storedSize).toBeGreaterThan(25 * 1024 * 1024);
      const chunks = await state.pool.query<{ n: number; biggest: number }>(
        'SELECT count(*) AS n, max(length(data)) AS biggest FROM quarantine_chunk WHERE id = $1',
        [id],
      );
      expect(chunks.rows[0]?.n).toBeGreaterThan(40);
      expect(chunks.rows[0]?.biggest).toBeLessThanOrEqual(512 * 1024);
      const back = await collect(state.quarantine.openOriginal(item));
      expect(back.equals(bytes)).toBe(true);
    } finally {
      await state.close();
    }
  });

  it('a pooled connection killed by the server is logged, not thrown; the next query works', async () => {
    const schema = await freshSchema(server);
    const log = recorder();
    const state = await openPostgresState(testConnection(server, schema), {
      log: log.root,
      relayQueue: noQueue,
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('uncaughtException', onUnhandled);
    try {
      expect(await state.ping()).toBe(true);
      const admin = await server.admin();
      try {
        await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sandgate' AND pid <> pg_backend_pid()",
        );
      } finally {
        await admin.end();
      }
      const giveUp = Date.now() + 5000;
      while (!log.lines.some((l) => l.event === 'state.pool_error') && Date.now() < giveUp)
        await new Promise((r) => setTimeout(r, 10));
      expect(log.lines.some((l) => l.event === 'state.pool_error')).toBe(true);
      expect(await state.ping()).toBe(true);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('uncaughtException', onUnhandled);
      await state.close();
    }
  });

  it('a connection lost while a quarantine write holds it fails that write, not the process', async () => {
    const schema = await freshSchema(server);
    const state = await openPostgresState(testConnection(server, schema), {
      log: silentLogger,
      relayQueue: noQueue,
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('uncaughtException', onUnhandled);
    try {
      // The message's bytes arrive in two parts; between them the write's transaction waits, idle.
      let go!: () => void;
      const gate = new Promise<void>((r) => (go = r));
      const envelope = { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' };
      const write = state.quarantine
        .put({
          message: {
            msgId: 'lost1',
            envelope,
            size: 22,
            open: () =>
              Readable.from(
                (async function* () {
                  yield Buffer.from('Subject: lost\r\n\r\n');
                  await gate;
                  yield Buffer.from('hi\r\n');
                })(),
              ),
          },
          contentKey: 'l'.repeat(64),
          decision,
          outcomes: [],
        })
        .then(
          () => undefined,
          (e: unknown) => e as { code?: string },
        );
      const admin = await server.admin();
      try {
        const giveUp = Date.now() + 5000;
        for (;;) {
          const r = await admin.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sandgate' AND state = 'idle in transaction'",
          );
          if ((r.rowCount ?? 0) > 0) break;
          if (Date.now() > giveUp) throw new Error('the write never held a connection in a transaction');
          await new Promise((r) => setTimeout(r, 10));
        }
        // The server has closed the connection once its backend is gone.
        while (
          (
            await admin.query(
              "SELECT 1 FROM pg_stat_activity WHERE application_name = 'sandgate' AND state = 'idle in transaction'",
            )
          ).rowCount !== 0
        ) {
          if (Date.now() > giveUp) throw new Error('the backend did not end');
          await new Promise((r) => setTimeout(r, 10));
        }
      } finally {
        await admin.end();
      }
      go();
      expect((await write)?.code).toBe('ERR_QUARANTINE_WRITE');
      expect(unhandled).toEqual([]);
      // The connection was dropped from the pool: the next write works.
      const id = await state.quarantine.put({
        message: new BufferMessage('after1', envelope, Buffer.from('Subject: after\r\n\r\nhi\r\n')),
        contentKey: 'm'.repeat(64),
        decision,
        outcomes: [],
      });
      expect((await state.quarantine.get(id)).msgId).toBe('after1');
      expect(await state.quarantine.list()).toHaveLength(1);
    } finally {
      process.off('uncaughtException', onUnhandled);
      await state.close();
    }
  });

  it('copies a single host SQLite state (cache, tasks, allow list, quarantine with its bytes) into PostgreSQL', async () => {
    const dir = tempDir('sg-import-');
    const now = Date.now();
    const sqlite = openSqliteState(dir, { now: () => now });
    const body = Buffer.from('Subject: q\r\n\r\nquarantined\r\n');
    try {
      await sqlite.verdicts.put(
        { scanner: 'rules', fingerprint: 'f', contentKey: 'k'.repeat(64) },
        { finding: { kind: 'clean' }, version: '1' },
        now,
        now + 60_000,
      );
      await sqlite.allowList.add(['a'.repeat(64)], 'op');
      await sqlite.quarantine.put({
        message: new BufferMessage(
          'q1',
          { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' },
          body,
        ),
        contentKey: 'q'.repeat(64),
        decision,
        outcomes: [],
      });
    } finally {
      await sqlite.close();
    }
    const schema = await freshSchema(server);
    const state = await openPostgresState(testConnection(server, schema), {
      log: silentLogger,
      relayQueue: noQueue,
    });
    const db = openStateDb(dir);
    try {
      const counts = await importSqliteState(
        { db, quarantineDir: `${dir}/quarantine` },
        state.pool,
        state.quarantine,
        now,
      );
      expect(counts).toMatchObject({ verdicts: 1, allowList: 1, quarantine: 1, quarantineSkipped: 0 });
      expect(
        await state.verdicts.get({ scanner: 'rules', fingerprint: 'f', contentKey: 'k'.repeat(64) }, now),
      ).toEqual({
        finding: { kind: 'clean' },
        version: '1',
      });
      expect(await state.allowList.has('a'.repeat(64))).toBe(true);
      const item = await state.quarantine.get('q1');
      expect((await collect(state.quarantine.openOriginal(item))).equals(body)).toBe(true);
      // Again: nothing doubled.
      const again = await importSqliteState(
        { db, quarantineDir: `${dir}/quarantine` },
        state.pool,
        state.quarantine,
        now,
      );
      expect(again).toMatchObject({ verdicts: 0, quarantine: 0, quarantineSkipped: 1 });
    } finally {
      db.close();
      await state.close();
    }
  });

  it('a stopped server fails queries within the timeout (ping false, quarantine write ERR_QUARANTINE_WRITE), and recovers', async () => {
    const schema = await freshSchema(server);
    const state = await openPostgresState(
      testConnection(server, schema, { queryTimeoutMs: 1000, connectTimeoutMs: 1000 }),
      { log: silentLogger, relayQueue: noQueue },
    );
    try {
      expect(await state.ping()).toBe(true);
      await server.stopServer('immediate');
      try {
        const started = Date.now();
        expect(await state.ping()).toBe(false);
        const write = await state.quarantine
          .put({
            message: new BufferMessage(
              'down1',
              { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' },
              Buffer.from('x'),
            ),
            contentKey: 'd'.repeat(64),
            decision,
            outcomes: [],
          })
          .then(
            () => undefined,
            (e: unknown) => e as { code?: string },
          );
        expect(write?.code).toBe('ERR_QUARANTINE_WRITE');
        await expect(
          state.verdicts.get({ scanner: 'r', fingerprint: 'f', contentKey: 'c' }, Date.now()),
        ).rejects.toThrow();
        expect(Date.now() - started).toBeLessThan(5000);
      } finally {
        await server.startServer();
      }
      const giveUp = Date.now() + 10_000;
      while (!(await state.ping()) && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 50));
      expect(await state.ping()).toBe(true);
    } finally {
      await state.close();
    }
  });
});
