/**
 * The PostgreSQL LISTEN connection of a waiting process (src/store/pg/listener.ts) on a real
 * server: when it fails it is replaced by exactly one new connection, and close() ends it.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/core/logger.js';
import { PgListener } from '../../../src/store/pg/listener.js';
import { testConnection } from '../../support/pg-backend.js';
import { startPostgres, type TestPostgres } from '../../support/postgres.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

/** The backends of these pids that are still connected. */
async function connected(pids: readonly number[]): Promise<number[]> {
  const admin = await server.admin();
  try {
    const r = await admin.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[]) ORDER BY pid',
      [pids],
    );
    return r.rows.map((x) => x.pid);
  } finally {
    await admin.end();
  }
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const giveUp = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > giveUp) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The listener's current connection (private: the test reaches in to fail it the way pg does). */
function current(listener: PgListener): Promise<pg.Client> | undefined {
  return (listener as unknown as { client: Promise<pg.Client> | undefined }).client;
}

describe('PgListener', () => {
  it("a failed connection's late 'end' does not drop its replacement: close() ends every connection it opened", async () => {
    const listener = new PgListener(testConnection(server), silentLogger);
    const pids: number[] = [];
    try {
      const first = listener.wait('k', 10_000);
      await until('the first LISTEN connection', () => current(listener) !== undefined);
      const old = await current(listener)!;
      pids.push((old as unknown as { processID: number }).processID);
      // The server ends the session (pg_terminate_backend, a failover): pg emits 'error', and
      // 'end' once the socket has closed. The waiter re-checks and waits again in between.
      const ended = new Promise<void>((resolve) => old.once('end', () => resolve()));
      old.emit(
        'error',
        Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      );
      await first;
      const second = listener.wait('k', 10_000);
      const replacement = current(listener);
      expect(replacement).toBeDefined();
      const fresh = await replacement!;
      pids.push((fresh as unknown as { processID: number }).processID);
      await ended;
      // The old connection's 'end' left the replacement in place.
      expect(current(listener)).toBe(replacement);
      await listener.close();
      await second;
      await until('every LISTEN connection ended', async () => (await connected(pids)).length === 0);
    } finally {
      await listener.close();
    }
  });
});
