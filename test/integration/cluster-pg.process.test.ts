/**
 * A cluster on real PostgreSQL (issue #17, part 1): two `sandgate relay` processes and one
 * `sandgate helper` process with one `state.url` (a fresh database per test), the PT Sandbox fake
 * as their appliance and an SMTP sink as the relays' next hop.
 * - 300 messages over 30 contents through the three front ends at once: 30 tasks (single-flight
 *   across the cluster), every message answered with its verdict, none lost, helper stderr empty;
 * - kill -9 of the node that submitted a task mid-analysis: another node adopts the task (no new
 *   task), answers the MTA's retry with the verdict, and later retries come from the cache;
 * - pg_terminate_backend on a waiting node's LISTEN connection: it listens again and still gets
 *   the verdict within its deadline.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import {
  Cluster,
  createClusterDatabase,
  smtpSession,
  until,
  type ClusterDatabase,
  type HelperNode,
  type OutgoingMessage,
  type RelayNode,
} from '../support/cluster-nodes.js';
import { PG_BIN, postgresAvailable, startPostgres, type TestPostgres } from '../support/postgres.js';
import { tempDir } from '../support/tmp.js';

const TOKEN = 'cluster-pg-token-0123456789abcdef';
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

let server: TestPostgres | undefined;
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** One content of the load: `n` picks it; malicious ones carry the fake's DANGEROUS marker. */
function mail(n: number, malicious: boolean, copy: string): string {
  return [
    `Received: from mta.example.test by mx.example.test; id ${copy}`,
    'From: sender@example.org',
    'To: rcpt@example.net',
    `Subject: content ${n}`,
    `Message-ID: <content-${n}@example.org>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is content-${String(n).padStart(2, '0')}.`,
    ...(malicious ? ['X-Test-Verdict: DANGEROUS'] : []),
    '',
  ].join('\r\n');
}

const envelope = (raw: string): OutgoingMessage => ({
  from: 'sender@example.org',
  to: ['rcpt@example.net'],
  raw,
});

/**
 * One SMTP session to `port`. No client-side reply timeout short of the tests' own (120 s): a
 * node's answer is bounded by its deadline, which the assertions check.
 */
const session = (port: number, raws: readonly string[]) => smtpSession(port, raws.map(envelope), 120_000);

interface Setup {
  readonly db: ClusterDatabase;
  readonly sandbox: FakePtSandbox;
  readonly sink: SmtpSink;
  readonly cluster: Cluster;
}

async function setUp(
  sandboxOptions: Parameters<typeof startFakePtSandbox>[0],
  config: Record<string, unknown>,
): Promise<Setup> {
  if (server === undefined) throw new Error('PostgreSQL did not start');
  const db = await createClusterDatabase(server);
  cleanups.push(() => db.drop());
  const sandbox = await startFakePtSandbox({ tokens: { [TOKEN]: ['analysis'] }, ...sandboxOptions });
  cleanups.push(() => sandbox.close());
  const sink = await startSmtpSink();
  cleanups.push(() => sink.close());
  const cluster = new Cluster({
    dir: tempDir('sg-cluster-pg-'),
    stateUrl: db.url,
    ptSandbox: { url: sandbox.url, token: TOKEN },
    nextHopPort: sink.port,
    config,
  });
  cleanups.push(() => cluster.stop());
  return { db, sandbox, sink, cluster };
}

/** The LISTEN connections (backend pids) on the database: a waiting node's wake-up connection. */
async function listenBackends(db: ClusterDatabase): Promise<number[]> {
  const rows = await db.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'sandgate' AND query LIKE 'LISTEN %'",
    [db.name],
  );
  return rows.map((x) => x.pid);
}

async function count(db: ClusterDatabase, table: string): Promise<number> {
  const rows = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`);
  return Number(rows[0]?.n);
}

/** The relay's summary line of its `n`th message (0 first). */
const relayMessage = (node: RelayNode, n: number) =>
  node.records.filter((r) => r.event === 'relay.message')[n];

// Locally a machine without PostgreSQL skips, saying why; in CI a missing server is a failure
// (beforeAll throws).
const skip = !postgresAvailable() && !inCi;
describe.skipIf(skip)(
  `a cluster of sandgate processes on PostgreSQL (two relays, one helper, PT Sandbox fake)${
    skip ? ` [skipped: no initdb/pg_ctl in ${PG_BIN}; install postgresql or set SANDGATE_PG_BIN]` : ''
  }`,
  () => {
    beforeAll(async () => {
      if (!postgresAvailable()) {
        throw new Error(
          'PostgreSQL binaries are missing but CI is set: .ci/run must install postgresql (initdb, pg_ctl)',
        );
      }
      server = await startPostgres();
    }, 120_000);
    afterAll(async () => {
      await server?.stop();
    });

    it('300 messages over 30 contents through three front ends at once: 30 tasks, every verdict right, none lost', async () => {
      const { db, sandbox, sink, cluster } = await setUp(
        { taskDurationMs: 1_500 },
        { relay: { deadline: '60s' }, helper: { deadline: '60s' } },
      );
      const [a, b] = await Promise.all([cluster.startRelay('a'), cluster.startRelay('b')]);
      const h = cluster.startHelper('h');
      expect(await h.cgp.request('1', 'INTF 4')).toBe('1 INTF 4');

      const CONTENTS = 30;
      const COPIES = 10;
      const isMalicious = (c: number) => c % 3 === 0;
      interface Item {
        readonly content: number;
        readonly id: string;
        readonly raw: string;
      }
      const perFrontEnd: Item[][] = [[], [], []];
      // Round by round, each content's copies go to different front ends close together in time.
      for (let copy = 0; copy < COPIES; copy++) {
        for (let content = 0; content < CONTENTS; content++) {
          const id = `copy-${content}-${copy}`;
          perFrontEnd[(content + copy) % 3]!.push({
            content,
            id,
            raw: mail(content, isMalicious(content), id),
          });
        }
      }
      const [toA, toB, toH] = perFrontEnd as [Item[], Item[], Item[]];

      // Each relay: 10 SMTP sessions at once, 10 messages after one another in each.
      const viaRelay = async (node: RelayNode, items: Item[]) => {
        const sessions: Item[][] = Array.from({ length: 10 }, () => []);
        items.forEach((item, i) => sessions[i % 10]!.push(item));
        const replies = await Promise.all(
          sessions.map((s) =>
            session(
              node.relayPort,
              s.map((m) => m.raw),
            ),
          ),
        );
        return sessions.flatMap((s, i) => s.map((item, j) => ({ item, code: replies[i]![j]!.code })));
      };
      // The helper: every FILE request at once, as CommuniGate sends them.
      const viaHelper = async (node: HelperNode, items: Item[]) => {
        const seqs = items.map((item, i) => {
          const file = node.base.queueFile(`Queue/${i}.msg`, {
            sender: 'sender@example.org',
            recipients: ['rcpt@example.net'],
            body: item.raw,
          });
          const seq = String(100 + i);
          node.cgp.send(`${seq} FILE ${file}`);
          return seq;
        });
        return Promise.all(
          seqs.map(async (seq, i) => ({ item: items[i]!, reply: await node.cgp.reply(seq, 90_000) })),
        );
      };
      const [fromA, fromB, fromH] = await Promise.all([
        viaRelay(a, toA),
        viaRelay(b, toB),
        viaHelper(h, toH),
      ]);

      // Single-flight across the cluster: one task per content, whichever node got it first.
      expect(sandbox.tasksCreated()).toBe(CONTENTS);
      const tasksPerContent = new Map<number, number>();
      for (const t of sandbox.tasks.values()) {
        const m = /This is content-(\d+)\./.exec(t.bytes.toString('latin1'));
        expect(m).not.toBeNull();
        const n = Number(m![1]);
        tasksPerContent.set(n, (tasksPerContent.get(n) ?? 0) + 1);
      }
      expect([...tasksPerContent.keys()].sort((x, y) => x - y)).toEqual(
        Array.from({ length: CONTENTS }, (_, i) => i),
      );
      expect([...tasksPerContent.values()].every((n) => n === 1)).toBe(true);

      // Every relay message: 250 and handed on once with the verdict header, or 550 and not handed on.
      const delivered = new Map<string, string>();
      for (const m of sink.messages) {
        const text = m.bytes.toString('latin1');
        const id = /; id (copy-\d+-\d+)\r?\n/.exec(text)?.[1];
        expect(id).toBeDefined();
        expect(delivered.has(id!)).toBe(false);
        delivered.set(id!, text);
      }
      let cleanViaRelays = 0;
      for (const { item, code } of [...fromA, ...fromB]) {
        if (isMalicious(item.content)) {
          expect({ id: item.id, code }).toEqual({ id: item.id, code: 550 });
          expect(delivered.has(item.id)).toBe(false);
        } else {
          cleanViaRelays++;
          expect({ id: item.id, code }).toEqual({ id: item.id, code: 250 });
          expect(delivered.get(item.id)).toMatch(
            /^X-Sandgate-Verdict: clean; reason=clean; scanners=rules:clean,pt-sandbox:clean; id=sg-/m,
          );
        }
      }
      expect(sink.messages).toHaveLength(cleanViaRelays);
      // The helper: the header for clean mail, DISCARD (with a quarantine copy) for malicious mail.
      for (const { item, reply } of fromH) {
        if (isMalicious(item.content)) expect(reply).toMatch(/^\d+ DISCARD$/);
        else expect(reply).toMatch(/^\d+ ADDHEADER "X-Sandgate-Verdict: clean; reason=clean; /);
      }
      // Every malicious message kept a copy in the shared quarantine: nothing refused was dropped.
      const maliciousCount = [...fromA, ...fromB, ...fromH].filter((x) => isMalicious(x.item.content)).length;
      expect(maliciousCount).toBe(100);
      expect(await count(db, 'quarantine')).toBe(maliciousCount);
      // Nothing left in flight.
      expect(await count(db, 'inflight_scan')).toBe(0);
      expect(await count(db, 'pt_task')).toBe(0);

      const { exit } = await h.cgp.quit();
      expect(exit.code).toBe(0);
      expect(h.cgp.stderr).toBe('');
      // The helper wrote one summary per message to its log.
      expect(h.events().filter((e) => e.event === 'helper.reply')).toHaveLength(toH.length);
    }, 120_000);

    it('kill -9 of the submitting node mid-analysis: another node adopts the task, the retries are answered with no new task', async () => {
      // Tasks run until the test ends them (finishAll), so a slow machine cannot finish them early.
      const { db, sandbox, sink, cluster } = await setUp(
        { taskDurationMs: 600_000 },
        {
          cache: { lease: '1s' },
          scanners: { ptSandbox: { taskLease: '1s' } },
          relay: { deadline: '30s' },
          helper: { deadline: '30s' },
        },
      );
      const [a, b] = await Promise.all([cluster.startRelay('a'), cluster.startRelay('b')]);
      const h = cluster.startHelper('h');
      expect(await h.cgp.request('1', 'INTF 4')).toBe('1 INTF 4');

      const first = session(a.relayPort, [mail(1, false, 'try-1')]);
      await until('the task on the fake', () => sandbox.tasksCreated() === 1);
      await until('node A recorded its submission', () =>
        a.records.some((r) => r.event === 'pt.task_submitted'),
      );
      await a.kill9();
      // The MTA got no answer: the message stays in its queue.
      expect((await first)[0]?.code).toBe(0);
      expect(sink.messages).toHaveLength(0);

      // The MTA retries through node B: B takes the scan over once A's leases ran out and adopts the task.
      const retry = session(b.relayPort, [mail(1, false, 'try-2')]);
      await until('node B adopted the task', () => b.records.some((r) => r.event === 'pt.task_adopted'));
      sandbox.finishAll();
      expect((await retry)[0]?.code).toBe(250);
      expect(sink.messages).toHaveLength(1);
      expect(sink.messages[0]!.bytes.toString('latin1')).toMatch(
        /^X-Sandgate-Verdict: clean; reason=clean; scanners=rules:clean,pt-sandbox:clean; id=sg-/m,
      );
      expect(sandbox.tasksCreated()).toBe(1);
      const adopted = b.records.filter((r) => r.event === 'pt.task_adopted');
      expect(adopted).toHaveLength(1);
      expect(adopted[0]).toMatchObject({ scanId: [...sandbox.tasks.keys()][0] });
      expect(String(adopted[0]?.previousOwner)).toContain(`:${a.pid}:`);
      expect(b.records.some((r) => r.event === 'pt.task_submitted')).toBe(false);

      // Later retries, through the same node or the helper: from the cache, nothing asked of the appliance.
      const polls = sandbox.counters['analysis/checkTask'];
      expect((await session(b.relayPort, [mail(1, false, 'try-3')]))[0]?.code).toBe(250);
      await until('node B logged the cached answer', () => relayMessage(b, 1) !== undefined, 5_000);
      const file = h.base.queueFile('Queue/1.msg', { body: mail(1, false, 'try-4') });
      expect(await h.cgp.request('2', `FILE ${file}`, 20_000)).toMatch(
        /^2 ADDHEADER "X-Sandgate-Verdict: clean; reason=clean; /,
      );
      expect(sandbox.tasksCreated()).toBe(1);
      expect(sandbox.counters['analysis/checkTask']).toBe(polls);
      expect(sink.messages).toHaveLength(2);
      expect(relayMessage(b, 1)).toMatchObject({
        code: 250,
        outcomes: ['rules:clean', expect.stringMatching(/^pt-sandbox:clean:cached/)],
      });
      await until('the helper logged its verdict', () => h.events().some((e) => e.event === 'helper.reply'));
      expect(h.events().find((e) => e.event === 'helper.reply')).toMatchObject({
        action: 'deliver',
        outcomes: ['rules:clean', expect.stringMatching(/^pt-sandbox:clean:cached/)],
      });
      expect(await count(db, 'pt_task')).toBe(0);
      const { exit } = await h.cgp.quit();
      expect(exit.code).toBe(0);
      expect(h.cgp.stderr).toBe('');
    }, 90_000);

    it("pg_terminate_backend on a waiting node's LISTEN connection: it listens again and gets the verdict in time", async () => {
      // The default lease (30 s): the waiting node is not re-checking at every short lease end,
      // only when woken and every 5 s.
      const { db, sandbox, sink, cluster } = await setUp(
        { taskDurationMs: 600_000 },
        { relay: { deadline: '30s' } },
      );
      const [a, b] = await Promise.all([cluster.startRelay('a'), cluster.startRelay('b')]);
      const raw = mail(7, true, 'on-a');
      const onA = session(a.relayPort, [raw]);
      await until('node A submitted the task', () => a.records.some((r) => r.event === 'pt.task_submitted'));
      expect(await listenBackends(db)).toEqual([]);

      // Node B gets the same content and waits for A's lease; its wake-up connection appears.
      const onB = session(b.relayPort, [mail(7, true, 'on-b')]);
      let listening: number[] = [];
      await until('node B listening', async () => (listening = await listenBackends(db)).length === 1);
      const killed = listening[0]!;
      const terminated = await db.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [killed]);
      expect(terminated[0]?.ok).toBe(true);
      // It re-checks and listens again on a new connection, without a message ending the wait.
      await until('node B listening again', async () => {
        const now = await listenBackends(db);
        return now.length === 1 && now[0] !== killed;
      });
      expect(b.records.some((r) => r.event === 'relay.message')).toBe(false);
      // The node noticed the failure (logged, never thrown).
      await until('node B logged the dropped connection', () =>
        b.records.some((r) => r.event === 'state.pool_error'),
      );
      expect(b.records.find((r) => r.event === 'state.pool_error')).toMatchObject({
        level: 40,
        err: { code: '57P01' },
      });

      sandbox.finishAll();
      const [ra, rb] = await Promise.all([onA, onB]);
      expect(ra[0]?.code).toBe(550);
      // The verdict, not the 451 the relay answers when its deadline (30 s) runs out.
      expect(rb[0]?.code).toBe(550);
      expect(sandbox.tasksCreated()).toBe(1);
      expect(sink.messages).toHaveLength(0);
      await until('node B logged its answer', () => relayMessage(b, 0) !== undefined, 5_000);
      expect(relayMessage(b, 0)).toMatchObject({
        code: 550,
        outcomes: ['rules:clean', expect.stringMatching(/^pt-sandbox:malicious\(Fake\.Dangerous\.Marker\)/)],
      });
      // Both refusals kept a copy in the shared quarantine.
      expect(await count(db, 'quarantine')).toBe(2);
    }, 90_000);
  },
);
