/**
 * The CommuniGate helper as a real child process on the PostgreSQL state (state.url): the
 * quarantine goes to the database, a database that goes away mid-session turns quarantine copies
 * into temporary failures (never a drop), and the helper writes nothing to stderr throughout.
 */
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CgpBase, CgpHelper } from '../support/cgp.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { buildMessage, EICAR } from '../support/specimens.js';

describe('sandgate helper on the PostgreSQL state', () => {
  let server: TestPostgres | undefined;
  let base: CgpBase | undefined;
  beforeAll(async () => {
    server = await startPostgres();
    base = new CgpBase('sg-cgp-pg-');
  }, 60_000);
  afterAll(async () => {
    base?.remove();
    await server?.stop();
  });

  it('quarantines into PostgreSQL, answers tempfail while it is down, recovers after a restart; stderr stays empty', async () => {
    if (server === undefined || base === undefined) throw new Error('not started');
    const url = `postgres://${server.user}@${server.host}:${server.port}/${server.database}`;
    const infected = (n: string): Buffer =>
      buildMessage({ subject: n, attachments: [{ filename: `${n}.com.txt`, content: EICAR }] });
    const files = {
      clean: base.queueFile('Queue/2001.msg', { body: buildMessage({ subject: 'c1', text: 'hello\r\n' }) }),
      virus1: base.queueFile('Queue/2002.msg', { body: infected('v1') }),
      virus2: base.queueFile('Queue/2003.msg', { body: infected('v2') }),
      clean2: base.queueFile('Queue/2004.msg', { body: buildMessage({ subject: 'c2', text: 'again\r\n' }) }),
      virus3: base.queueFile('Queue/2005.msg', { body: infected('v3') }),
    };
    const h = CgpHelper.start({
      base,
      config: {
        stateDir: join(base.dir, 'state'),
        state: { url, tls: 'disable', queryTimeout: '2s' },
        log: { file: join(base.dir, 'sandgate.log'), level: 'info' },
        scan: { chain: ['rules'] },
      },
    });
    try {
      h.send('00001 INTF 4', `00002 FILE ${files.clean}`, `00003 FILE ${files.virus1}`);
      expect(await h.reply('00002')).toMatch(/^00002 ADDHEADER "X-Sandgate-Verdict: clean/);
      expect(await h.reply('00003')).toBe('00003 DISCARD');
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => undefined);
      await client.connect();
      const rows = await client.query<{ verdict: string }>('SELECT verdict FROM quarantine');
      expect(rows.rows.map((r) => r.verdict)).toEqual(['malicious']);
      await client.end();

      await server.stopServer('immediate');
      h.send(`00004 FILE ${files.virus2}`);
      // No copy, no drop: a temporary failure, so CommuniGate keeps the message and retries.
      expect(await h.reply('00004', 30_000)).toMatch(/^00004 REJECTED ".*will retry"$/);

      await server.startServer();
      h.send(`00005 FILE ${files.clean2}`, `00006 FILE ${files.virus3}`);
      expect(await h.reply('00005', 30_000)).toMatch(/^00005 ADDHEADER "X-Sandgate-Verdict: clean/);
      expect(await h.reply('00006', 30_000)).toBe('00006 DISCARD');
      const { exit } = await h.quit('00007');
      expect(exit.code).toBe(0);
      expect(h.stderr).toBe('');
    } finally {
      h.kill();
    }
  }, 120_000);
});
