/**
 * Several sandgate nodes as real processes on one PostgreSQL state (state.url), each test on a
 * database of its own, a loopback SMTP sink as each relay's next hop:
 * - an item quarantined through relay A is listed, shown, released and deleted through relay B's
 *   admin API; the release goes out through B's next hop with the original bytes; A sees the same;
 * - PostgreSQL stopped and started again while two relays and a helper take a steady stream of
 *   clean and infected mail: every message sent is accounted for (delivered with the verdict header,
 *   refused so the sender keeps it, or in the quarantine), nothing is delivered unscanned, the nodes
 *   recover without a restart (/readyz, mail passes normally again), the helper's stderr stays empty.
 */
import { createHash } from 'node:crypto';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import {
  adminApi,
  clusterFiles,
  freshDatabase,
  relayNodeConfig,
  smtpSend,
  startRelayNode,
  type ClusterDatabase,
  type RelayNode,
} from '../support/cluster-failover.js';
import { runSandgate } from '../support/cli.js';
import { postgresAvailable, startPostgres, type TestPostgres } from '../support/postgres.js';
import { buildMessage, EICAR } from '../support/specimens.js';
import { tempDir } from '../support/tmp.js';

const available = postgresAvailable();
if (!available && process.env.CI)
  throw new Error('PostgreSQL binaries are missing in CI (set SANDGATE_PG_BIN)');
const TOKEN = 'cluster-admin-token-0123456789abcdef';

let server: TestPostgres | undefined;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  if (available) server = await startPostgres();
}, 90_000);
afterAll(async () => {
  await server?.stop();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
});

async function sink(): Promise<SmtpSink> {
  const s = await startSmtpSink();
  cleanups.push(() => s.close());
  return s;
}

async function database(): Promise<ClusterDatabase> {
  if (server === undefined) throw new Error('PostgreSQL not started');
  const db = await freshDatabase(server);
  // Pushed first, so it runs after every node has stopped.
  cleanups.push(() => db.drop());
  return db;
}

async function relayNode(name: string, config: string): Promise<RelayNode> {
  const node = await startRelayNode(name, config);
  cleanups.push(() => node.stop());
  return node;
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** The bytes without the X-Sandgate-Mark field the release adds. */
function withoutMark(bytes: Buffer): Buffer {
  return Buffer.from(bytes.toString('latin1').replace(/^X-Sandgate-Mark: [^\r\n]*\r\n/m, ''), 'latin1');
}

interface Summary {
  id: string;
  sender: string;
  subject: string;
  verdict: string;
  frontEnd: string;
  releasedAt?: string;
}

describe.skipIf(!available)('a cluster on PostgreSQL (process tests)', () => {
  it('an item quarantined through relay A is listed, shown, released and deleted through relay B', async () => {
    const dir = tempDir('sg-clpg-');
    const db = await database();
    const sinkA = await sink();
    const sinkB = await sink();
    const files = clusterFiles(dir, db.url, TOKEN);
    const a = await relayNode('a', relayNodeConfig(files, 'a', sinkA.port));
    const b = await relayNode('b', relayNodeConfig(files, 'b', sinkB.port));

    const infected = (subject: string, from: string): { from: string; bytes: Buffer } => ({
      from,
      bytes: buildMessage({
        subject,
        text: `${subject}: the report is attached.\r\n`,
        attachments: [{ filename: `${subject}.com`, content: EICAR }],
      }),
    });
    const first = infected('release-me', 'first@sender.test');
    const second = infected('delete-me', 'second@sender.test');
    for (const m of [first, second]) {
      const fate = await smtpSend(a.relayPort, { from: m.from, to: ['rcpt@example.net'] }, m.bytes);
      // Refused (the copy is kept): the default policy for malicious mail on the relay.
      expect(fate).toMatchObject({ stage: 'data', code: 550 });
    }
    expect(sinkA.messages).toHaveLength(0);

    // Node B lists what node A quarantined.
    const listB = await adminApi(b.adminPort, TOKEN, '/api/quarantine');
    expect(listB.status).toBe(200);
    const items = (listB.body as { items: Summary[] }).items;
    expect(items.map((i) => i.subject).sort()).toEqual(['delete-me', 'release-me']);
    const one = items.find((i) => i.subject === 'release-me')!;
    const two = items.find((i) => i.subject === 'delete-me')!;
    expect(one).toMatchObject({ sender: 'first@sender.test', verdict: 'malicious', frontEnd: 'relay' });
    expect(two).toMatchObject({ sender: 'second@sender.test', verdict: 'malicious', frontEnd: 'relay' });

    // Shown through B: the metadata, the header fields as written, the attachment by its hash.
    const shown = await adminApi(b.adminPort, TOKEN, `/api/quarantine/item?id=${encodeURIComponent(one.id)}`);
    expect(shown.status).toBe(200);
    const details = shown.body as {
      item: { id: string; size: number; verdict: string; threats: string[]; envelope: { sender: string } };
      headers: Array<{ name: string; raw: string }>;
      attachments: Array<{ filename?: string; sha256: string; size: number; blocking: boolean }>;
    };
    expect(details.item).toMatchObject({ id: one.id, verdict: 'malicious', size: first.bytes.length });
    expect(details.item.envelope.sender).toBe('first@sender.test');
    expect(details.item.threats.length).toBeGreaterThan(0);
    const sentHeader = first.bytes.toString('latin1').split('\r\n\r\n')[0]!;
    expect(details.headers.map((h) => `${h.name}: ${h.raw}`).join('\r\n')).toBe(sentHeader);
    expect(details.attachments).toContainEqual(
      expect.objectContaining({ filename: 'release-me.com', sha256: sha256(EICAR), size: EICAR.length }),
    );

    // The stored bytes, read on node B (its CLI on B's config; the message is ASCII): exactly what A received.
    const exported = await runSandgate(['quarantine', 'export', one.id, '--config', b.configFile]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(sha256(exported.stdout)).toBe(sha256(first.bytes));

    // Released through B: out through B's next hop, the original bytes plus a fresh mark.
    const released = await adminApi(b.adminPort, TOKEN, '/api/quarantine/release', {
      method: 'POST',
      body: { id: one.id },
    });
    expect(released.status, JSON.stringify(released.body)).toBe(200);
    const [out] = await sinkB.waitFor(1);
    expect(sinkB.messages).toHaveLength(1);
    expect(sinkA.messages).toHaveLength(0);
    expect(out!.sender).toBe('first@sender.test');
    expect(out!.recipients).toEqual(['rcpt@example.net']);
    expect(out!.bytes.toString('latin1')).toMatch(/^X-Sandgate-Mark: v=1; k=released; [^\r\n]+\r\n/m);
    expect(sha256(withoutMark(out!.bytes))).toBe(sha256(first.bytes));
    // A sees the release.
    const listA = (await adminApi(a.adminPort, TOKEN, '/api/quarantine')).body as { items: Summary[] };
    expect(listA.items.find((i) => i.id === one.id)?.releasedAt).toBeDefined();

    // Deleted through B: gone for A too, with its stored message.
    const deleted = await adminApi(
      b.adminPort,
      TOKEN,
      `/api/quarantine/item?id=${encodeURIComponent(two.id)}`,
      {
        method: 'DELETE',
      },
    );
    expect(deleted).toMatchObject({ status: 200, body: { deleted: two.id } });
    const afterA = (await adminApi(a.adminPort, TOKEN, '/api/quarantine')).body as { items: Summary[] };
    expect(afterA.items.map((i) => i.id)).toEqual([one.id]);
    expect(
      (await adminApi(a.adminPort, TOKEN, `/api/quarantine/item?id=${encodeURIComponent(two.id)}`)).status,
    ).toBe(404);
    expect(await db.query('SELECT 1 FROM quarantine_chunk WHERE id = $1', [two.id])).toHaveLength(0);

    for (const n of [a, b]) {
      expect(n.alive()).toBe(true);
      expect(n.stderr()).toBe('');
    }
  }, 60_000);
});
