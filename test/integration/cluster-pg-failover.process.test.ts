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
import { FAKE_PT_TOKEN, startFakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import {
  adminPort,
  Cluster,
  createClusterDatabase,
  readyz,
  smtpSend,
  type ClusterDatabase,
  type ConfigObject,
  until,
  untilReady,
} from '../support/cluster-nodes.js';
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
  const db = await createClusterDatabase(server);
  // Pushed first, so it runs after every node has stopped.
  cleanups.push(() => db.drop());
  return db;
}

/**
 * The nodes of one test on `db`, stopped after it: the admin API on, short state timeouts (a node
 * must notice a database that went away quickly and tempfail), a 20 s relay deadline.
 */
function cluster(db: ClusterDatabase, ptSandbox?: { readonly url: string; readonly token: string }): Cluster {
  const config: ConfigObject = {
    log: { level: 'info' },
    state: { queryTimeout: '2s', connectTimeout: '1s', pool: { max: 4 } },
    relay: { deadline: '20s' },
    ...(ptSandbox !== undefined
      ? {
          scanners: {
            ptSandbox: { polling: { firstDelay: '20ms', interval: '50ms', slowInterval: '200ms' } },
          },
        }
      : {}),
  };
  const c = new Cluster({
    dir: tempDir('sg-clpg-'),
    stateUrl: db.url,
    adminToken: TOKEN,
    ...(ptSandbox !== undefined ? { ptSandbox } : {}),
    config,
  });
  cleanups.push(() => c.stop());
  return c;
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
    const db = await database();
    const sinkA = await sink();
    const sinkB = await sink();
    const nodes = cluster(db);
    const a = await nodes.startRelay('a', { nextHopPort: sinkA.port });
    const b = await nodes.startRelay('b', { nextHopPort: sinkB.port });

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
    const listB = await nodes.admin(b, '/api/quarantine');
    expect(listB.status).toBe(200);
    const items = (listB.body as { items: Summary[] }).items;
    expect(items.map((i) => i.subject).sort()).toEqual(['delete-me', 'release-me']);
    const one = items.find((i) => i.subject === 'release-me')!;
    const two = items.find((i) => i.subject === 'delete-me')!;
    expect(one).toMatchObject({ sender: 'first@sender.test', verdict: 'malicious', frontEnd: 'relay' });
    expect(two).toMatchObject({ sender: 'second@sender.test', verdict: 'malicious', frontEnd: 'relay' });

    // Shown through B: the metadata, the header fields as written, the attachment by its hash.
    const shown = await nodes.admin(b, `/api/quarantine/item?id=${encodeURIComponent(one.id)}`);
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
    const released = await nodes.admin(b, '/api/quarantine/release', {
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
    const listA = (await nodes.admin(a, '/api/quarantine')).body as { items: Summary[] };
    expect(listA.items.find((i) => i.id === one.id)?.releasedAt).toBeDefined();

    // Deleted through B: gone for A too, with its stored message.
    const deleted = await nodes.admin(b, `/api/quarantine/item?id=${encodeURIComponent(two.id)}`, {
      method: 'DELETE',
    });
    expect(deleted).toMatchObject({ status: 200, body: { deleted: two.id } });
    const afterA = (await nodes.admin(a, '/api/quarantine')).body as { items: Summary[] };
    expect(afterA.items.map((i) => i.id)).toEqual([one.id]);
    expect((await nodes.admin(a, `/api/quarantine/item?id=${encodeURIComponent(two.id)}`)).status).toBe(404);
    expect(await db.query('SELECT 1 FROM quarantine_chunk WHERE id = $1', [two.id])).toHaveLength(0);

    for (const n of [a, b]) {
      expect(n.alive()).toBe(true);
      expect(n.stderr()).toBe('');
    }
  }, 60_000);

  it('PostgreSQL stopped and started mid-load: every message accounted for, none unscanned, nodes recover, helper stderr empty', async () => {
    if (server === undefined) throw new Error('PostgreSQL not started');
    const pgServer = server;
    const db = await database();
    const sinkA = await sink();
    const sinkB = await sink();
    const sandbox = await startFakePtSandbox({ taskDurationMs: 100 });
    cleanups.push(() => sandbox.close());
    const nodes = cluster(db, { url: sandbox.url, token: FAKE_PT_TOKEN });
    const a = await nodes.startRelay('a', { nextHopPort: sinkA.port });
    const b = await nodes.startRelay('b', { nextHopPort: sinkB.port });
    const h = nodes.startHelper('h', { config: { helper: { deadline: '20s' } } });
    const { cgp: helper, base } = h;
    expect(await helper.request('0', 'INTF 4')).toBe('0 INTF 4');
    const helperAdmin = Number(
      /listening on 127\.0\.0\.1:(\d+)/.exec(await helper.waitForInfo(/admin port listening/))?.[1],
    );
    const readyPorts = [adminPort(a), adminPort(b), helperAdmin];

    // 24 contents: EICAR (the rules scanner's verdict), a PT Sandbox DANGEROUS verdict (the fake's,
    // through the shared cache, leases and tasks), or clean (PT Sandbox's verdict too). The message
    // number travels in the envelope sender only, so that contents (and their cache entries) repeat.
    const CONTENTS = 24;
    const kind = (c: number): 'eicar' | 'pt-dangerous' | 'clean' =>
      c % 3 === 0 ? 'eicar' : c % 6 === 1 ? 'pt-dangerous' : 'clean';
    const infected = (c: number): boolean => kind(c) !== 'clean';
    const bodies = Array.from({ length: CONTENTS }, (_, c) =>
      buildMessage({
        subject: `load content ${c}`,
        text:
          kind(c) === 'pt-dangerous' ? `content ${c}\r\nX-Test-Verdict: DANGEROUS\r\n` : `content ${c}\r\n`,
        attachments: [
          kind(c) === 'eicar'
            ? { filename: `c${c}.com`, content: EICAR }
            : { filename: `c${c}.txt`, content: Buffer.from(`harmless attachment ${c}\r\n`) },
        ],
      }),
    );

    type FrontEnd = 'a' | 'b' | 'helper';
    interface Sent {
      readonly n: number;
      readonly frontEnd: FrontEnd;
      readonly content: number;
      readonly phase: Phase;
      startedAt: number;
      endedAt?: number;
      /** SMTP: the final reply code (or the code of the refusal); helper: the reply line. */
      reply?: string;
      code?: number;
      broken?: string;
    }
    type Phase = 'before' | 'stopping' | 'down' | 'starting' | 'after' | 'check';
    let phase: Phase = 'before';
    const sent = new Map<number, Sent>();
    let next = 0;
    const sender = (n: number): string => `m${n}@load.test`;
    const relayOf = { a, b };

    const sendOne = async (frontEnd: FrontEnd, content: number): Promise<Sent> => {
      const n = ++next;
      const s: Sent = { n, frontEnd, content, phase, startedAt: Date.now() };
      sent.set(n, s);
      if (frontEnd === 'helper') {
        const rel = base.queueFile(`Queue/${n}.msg`, {
          sender: sender(n),
          recipients: ['rcpt@example.net'],
          body: bodies[content]!,
        });
        try {
          s.reply = await helper.request(String(n), `FILE ${rel}`, 30_000);
        } catch (err) {
          s.broken = err instanceof Error ? err.message : String(err);
        }
      } else {
        const fate = await smtpSend(
          relayOf[frontEnd].relayPort,
          { from: sender(n), to: ['rcpt@example.net'] },
          bodies[content]!,
        );
        if (fate.broken !== undefined) s.broken = `${fate.stage}: ${fate.broken}`;
        else {
          s.code = fate.code;
          s.reply = `${fate.stage}: ${fate.code} ${fate.text}`;
        }
      }
      s.endedAt = Date.now();
      return s;
    };

    // The load: four senders per front end, each sending one message after the other.
    let loading = true;
    let stoppedAt = Number.POSITIVE_INFINITY;
    const answered = (p: Phase): number =>
      [...sent.values()].filter((s) => s.phase === p && s.endedAt !== undefined).length;
    // A node that died ends the load and the test at once (the accounting below says what it cost).
    const down = (): string[] => [
      ...[a, b].filter((n) => !n.alive()).map((n) => `relay ${n.name}`),
      ...(h.alive() ? [] : ['the helper']),
    ];
    const alive =
      (check: () => boolean): (() => boolean) =>
      () => {
        if (down().length > 0) throw new Error(`${down().join(', ')} died (no restart expected)`);
        return check();
      };
    const workers = (['a', 'b', 'helper'] as const).flatMap((fe, i) =>
      Array.from({ length: 4 }, async (_, w) => {
        let k = i * 7 + w * 5;
        while (loading && down().length === 0) await sendOne(fe, k++ % CONTENTS);
      }),
    );
    // 60 answers in `p`, every node alive throughout.
    const answers = (p: Phase, what: string) =>
      until(
        what,
        alive(() => answered(p) >= 60),
        60_000,
      );
    const ready = (status: 200 | 503) =>
      untilReady(
        readyPorts,
        status,
        alive(() => true),
      );
    try {
      await answers('before', 'mail flowing before the outage');
      phase = 'stopping';
      stoppedAt = Date.now();
      await pgServer.stopServer('immediate');
      phase = 'down';
      await ready(503);
      await answers('down', 'mail answered while PostgreSQL is down');
      phase = 'starting';
      await pgServer.startServer();
      phase = 'after';
      await ready(200);
      await answers('after', 'mail answered after the restart');
    } finally {
      loading = false;
      await Promise.all(workers);
    }

    // After the restart, new mail passes normally on every node: each content through each front end.
    phase = 'check';
    await Promise.all(
      (['a', 'b', 'helper'] as const).map(async (fe) => {
        for (let c = 0; c < CONTENTS; c++) await sendOne(fe, c);
      }),
    );

    // The accounting: the fate of every message sent.
    // Each sender's quarantine items, described for the failure message.
    const quarantined = new Map<string, string[]>();
    const rows = await db.query<{ sender: string; action: string; reason: string; outcomes: string }>(
      'SELECT sender, action, reason, outcomes FROM quarantine',
    );
    for (const r of rows) {
      const list = quarantined.get(r.sender) ?? [];
      list.push(`${r.action}/${r.reason} ${r.outcomes}`);
      quarantined.set(r.sender, list);
    }
    const delivered = new Map<string, Array<{ sink: string; bytes: Buffer }>>();
    for (const [name, s] of [
      ['a', sinkA],
      ['b', sinkB],
    ] as const) {
      for (const m of s.messages) {
        const list = delivered.get(m.sender) ?? [];
        list.push({ sink: name, bytes: m.bytes });
        delivered.set(m.sender, list);
      }
    }
    const fates: Record<string, number[]> = {};
    const problems: string[] = [];
    const fate = (s: Sent, what: string): void => {
      (fates[what] ??= []).push(s.n);
    };
    for (const s of sent.values()) {
      const id = sender(s.n);
      const bad = infected(s.content);
      const copies = delivered.get(id) ?? [];
      const inQuarantine = quarantined.has(id);
      const tag = `#${s.n} (${s.frontEnd}, content ${s.content}${bad ? ' infected' : ''}, ${s.phase})`;
      if (s.broken !== undefined) {
        problems.push(`${tag}: no answer: ${s.broken}`);
        continue;
      }
      if (s.frontEnd === 'helper') {
        const r = s.reply ?? '';
        if (/^\d+ ADDHEADER "X-Sandgate-Verdict: clean[^"]*" OK$/.test(r) && !bad) fate(s, 'delivered');
        else if (r === `${s.n} DISCARD` && bad && inQuarantine) fate(s, 'quarantined');
        else if (/^\d+ REJECTED ".*will retry"$/.test(r)) fate(s, 'tempfailed');
        else problems.push(`${tag}: reply ${r}; quarantine: ${JSON.stringify(quarantined.get(id) ?? [])}`);
        continue;
      }
      const code = s.code ?? 0;
      if (code === 250 && !bad && copies.length > 0 && copies.every((c) => c.sink === s.frontEnd))
        fate(s, 'delivered');
      else if (code === 550 && bad && inQuarantine && copies.length === 0) fate(s, 'quarantined');
      else if (code >= 400 && code < 500 && copies.length === 0) fate(s, 'tempfailed');
      else
        problems.push(
          `${tag}: ${s.reply ?? ''}; ${copies.length} delivered; quarantine: ${JSON.stringify(quarantined.get(id) ?? [])}`,
        );
    }
    // Nothing reaches a mailbox unscanned: every delivered copy carries a clean verdict and belongs to a message sent.
    for (const [id, copies] of delivered) {
      const n = Number(/^m(\d+)@load\.test$/.exec(id)?.[1]);
      const s = sent.get(n);
      if (s === undefined) problems.push(`a delivery from ${id} that was never sent`);
      for (const c of copies) {
        const header = c.bytes.toString('latin1').split('\r\n\r\n')[0] ?? '';
        if (!/^X-Sandgate-Verdict: clean\b/m.test(header))
          problems.push(`${id} delivered without a clean verdict header`);
        if (s !== undefined && infected(s.content)) problems.push(`${id} (infected) delivered`);
      }
    }
    for (const id of quarantined.keys()) {
      if (!sent.has(Number(/^m(\d+)@load\.test$/.exec(id)?.[1])))
        problems.push(`a quarantine item from ${id} that was never sent`);
    }
    const count = (what: string): number => fates[what]?.length ?? 0;
    const summary = Object.fromEntries(Object.entries(fates).map(([k, v]) => [k, v.length]));
    expect(problems, JSON.stringify(summary)).toEqual([]);
    expect(count('delivered') + count('quarantined') + count('tempfailed')).toBe(sent.size);

    // The outage was felt: mail was tempfailed, and the nodes fell back to scanning without the shared
    // cache and leases (and said so).
    const during = (what: string): Sent[] =>
      (fates[what] ?? []).map((n) => sent.get(n)!).filter((s) => s.phase === 'down');
    expect(during('tempfailed').length).toBeGreaterThan(0);
    // Every kind of content went through each node both before the outage and after it.
    for (const p of ['before', 'after'] as const) {
      for (const what of ['delivered', 'quarantined']) {
        expect(
          (fates[what] ?? []).filter((n) => sent.get(n)!.phase === p).length,
          `${what} ${p}`,
        ).toBeGreaterThan(0);
      }
    }
    for (const n of [a, b]) expect(n.records.some((r) => r.event === 'memo.state_fallback')).toBe(true);
    // Before the outage and after the restart, nothing was tempfailed.
    const tempfailed = new Set(fates.tempfailed ?? []);
    expect(
      [...sent.values()].filter((s) => tempfailed.has(s.n) && s.endedAt! < stoppedAt).map((s) => s.reply),
    ).toEqual([]);
    const check = [...sent.values()].filter((s) => s.phase === 'check');
    expect(check).toHaveLength(3 * CONTENTS);
    expect(check.filter((s) => (fates.tempfailed ?? []).includes(s.n))).toEqual([]);

    // No node was restarted; each is ready; the helper wrote nothing to stderr.
    for (const n of [a, b]) {
      expect(n.alive(), n.name).toBe(true);
      expect(n.stderr(), n.name).toBe('');
    }
    expect((await Promise.all(readyPorts.map(readyz))).every((s) => s === 200)).toBe(true);
    expect(helper.stderr).toBe('');
    const { exit } = await helper.quit();
    expect(exit.code).toBe(0);
    expect(helper.stderr).toBe('');
  }, 110_000);
});
