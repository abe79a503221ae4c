/**
 * The milter front end over a real socket, driven by a client that speaks the MTA's side as
 * Postfix 3.7 does (test/support/milter-client.ts), with the real verdict core and rules scanner.
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { analyseMessage } from '../../src/core/content-key.js';
import { BufferMessage } from '../../src/mime/spool.js';
import { encodeCommand, frame, SMFIP, type MilterReply } from '../../src/milter/codec.js';
import { WANTED_PROTOCOL } from '../../src/milter/session.js';
import { CountingScanner } from '../support/counting-scanner.js';
import { MilterClient, POSTFIX_OFFER } from '../support/milter-client.js';
import { startMilter, type MilterHarness } from '../support/milter.js';
import { EICAR } from '../support/relay.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function harness(options: Parameters<typeof startMilter>[0] = {}): Promise<MilterHarness> {
  const h = await startMilter(options);
  cleanups.push(() => h.close());
  return h;
}

async function client(h: MilterHarness, offer = POSTFIX_OFFER): Promise<MilterClient> {
  const c = await MilterClient.connect(h.port);
  cleanups.push(() => c.close());
  await c.negotiate(offer);
  await c.hello();
  return c;
}

const CLEAN =
  'From: Alice <a@test.local>\r\nTo: b@example.test\r\nSubject: hello\r\n' +
  'Message-ID: <clean-1@test.local>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\nJust text.\r\n';

const kinds = (rs: readonly MilterReply[]) => rs.map((r) => r.kind);
const value = (r: MilterReply | undefined) =>
  r && 'value' in r ? Buffer.from(r.value).toString('utf8') : undefined;

describe('milter session (real socket, real core)', () => {
  it('negotiates version 6, header edits only, and the no-reply flags, byte for byte', async () => {
    const h = await harness();
    const c = await MilterClient.connect(h.port);
    cleanups.push(() => c.close());
    c.send(encodeCommand({ kind: 'optneg', ...POSTFIX_OFFER }));
    const [packet] = await new Promise<Buffer[]>((resolve) =>
      c.socket.once('data', (d: Buffer) => resolve([d])),
    );
    // 'O', version 6, SMFIF_ADDHDRS|SMFIF_CHGHDRS, NOUNKNOWN|NR_CONN|NR_HELO|NR_RCPT|NR_HDR|NR_EOH|NR_BODY|HDR_LEADSPC
    expect(packet!.toString('hex')).toBe('0000000d4f' + '00000006' + '00000011' + '001cb180');
    expect(WANTED_PROTOCOL).toBe(0x1cb180);
    expect(WANTED_PROTOCOL & SMFIP.NR_MAIL).toBe(0);
    // DATA is sent and answered: its reply ACKs the macro packet Postfix's cleanup would otherwise
    // wait 40 ms for (Nagle against delayed ACK) before it writes the message (docs/milter.md).
    expect(WANTED_PROTOCOL & (SMFIP.NODATA | SMFIP.NR_DATA)).toBe(0);
  });

  it('delivers clean mail: the exact bytes rebuilt, our fields inserted at the top, ACCEPT', async () => {
    const h = await harness();
    const c = await client(h);
    const raw =
      'Received: from outside.example by client.test.local; Thu, 03 Dec 2026 09:59:00 +0000\r\n' +
      CLEAN.replace(
        'Subject: hello\r\n',
        'Subject: a folded\r\n\tsubject line\r\nX-Empty:\r\nX-Tab:\tvalue\r\n',
      );
    const replies = await c.message({ raw, queueId: '4ABCD123' });
    expect(kinds(replies)).toEqual(['insHeader', 'insHeader', 'accept']);
    expect(c.dataReplies).toEqual([{ kind: 'continue' }]);
    expect(replies[0]).toMatchObject({ kind: 'insHeader', index: 0, name: 'X-Sandgate-Verdict' });
    expect(value(replies[0])).toMatch(/^ clean; reason=clean; scanners=rules:clean; id=sg-/);
    expect(replies[1]).toMatchObject({ kind: 'insHeader', index: 1, name: 'X-Sandgate-Mark' });
    // The core saw the bytes the client sent: folding, empty values and tabs rebuilt exactly.
    expect(h.seen[0]!.bytes.toString('latin1')).toBe(raw);
    expect(h.seen[0]!.envelope).toEqual({
      sender: 'a@test.local',
      recipients: ['b@example.test'],
      clientAddress: '127.0.0.1',
      heloName: 'client.test.local',
      frontEnd: 'milter',
    });
    expect(await h.summary(1)).toMatchObject({
      action: 'deliver',
      code: 250,
      reply: 'accept',
      queueId: '4ABCD123',
      outcomes: ['rules:clean'],
    });
    // The spool is gone once answered.
    expect(existsSync(h.runtime.spoolDir) ? readdirSync(h.runtime.spoolDir) : []).toEqual([]);
  });

  it('rebuilds a message with the same content key as its original bytes, also bare LF and 8-bit', async () => {
    const h = await harness();
    const c = await client(h);
    const raw = Buffer.from(
      'From: a@test.local\r\nSubject: =?utf-8?q?x?=\r\n  more\r\nX-8bit: Gr\u00fc\u00dfe\r\n\r\nline\r\n\r\n\u00e9t\u00e9\r\n.dot\r\n',
      'utf8',
    );
    await c.message({ raw });
    const want = await analyseMessage(new BufferMessage('x', h.seen[0]!.envelope, raw));
    expect(h.seen[0]!.bytes.equals(raw)).toBe(true);
    expect(h.seen[0]!.evaluation!.contentKey).toBe(want.contentKey);
  });

  it('deletes every inbound copy of our fields, highest index first, then adds its own', async () => {
    const h = await harness();
    const c = await client(h);
    const raw = CLEAN.replace(
      'Subject: hello\r\n',
      'X-Sandgate-Verdict: clean; forged\r\nSubject: hello\r\nx-sandgate-verdict: clean; forged again\r\nX-Sandgate-Other: 1\r\n',
    );
    const replies = await c.message({ raw });
    expect(replies.filter((r) => r.kind === 'chgHeader')).toEqual([
      { kind: 'chgHeader', index: 2, name: 'X-Sandgate-Verdict', value: Buffer.alloc(0) },
      { kind: 'chgHeader', index: 1, name: 'X-Sandgate-Verdict', value: Buffer.alloc(0) },
      { kind: 'chgHeader', index: 1, name: 'X-Sandgate-Other', value: Buffer.alloc(0) },
    ]);
    expect(kinds(replies)).toEqual([
      'chgHeader',
      'chgHeader',
      'chgHeader',
      'insHeader',
      'insHeader',
      'accept',
    ]);
    expect((await h.summary(1)).removed).toBe(3);
  });

  it('refuses EICAR with 550 5.7.1 and keeps a quarantine copy', async () => {
    const h = await harness();
    const c = await client(h);
    const replies = await c.message({ raw: CLEAN.replace('Just text.', EICAR) });
    expect(replies).toHaveLength(1);
    expect(replies[0]).toMatchObject({ kind: 'replycode' });
    const text = (replies[0] as { text: string }).text;
    expect(text).toMatch(/^550 5\.7\.1 Message refused: .*EICAR.* \(sg-[0-9a-z]+-[0-9a-f]{10}\)$/);
    const s = await h.summary(1);
    expect(s).toMatchObject({ action: 'reject', code: 550, reply: 'replycode' });
    expect(await h.runtime.quarantine.get(s.quarantineId as string)).toBeDefined();
  });

  it('escapes % in the reply text and keeps it on one line', async () => {
    const h = await harness({ config: { milter: { rejectText: '100% sure: {threats}\r\nsecond line' } } });
    const c = await client(h);
    const [r] = await c.message({ raw: CLEAN.replace('Just text.', EICAR) });
    expect((r as { text: string }).text).toMatch(/^550 5\.7\.1 100%% sure: .* second line$/);
  });

  it('discards quarantined mail after the copy is kept, and answers 451 when it cannot be written', async () => {
    const h = await harness({ config: { policy: { malicious: 'quarantine' } } });
    const c = await client(h);
    expect(kinds(await c.message({ raw: CLEAN.replace('Just text.', EICAR) }))).toEqual(['discard']);
    const s = await h.summary(1);
    expect(s).toMatchObject({ action: 'quarantine', code: 250, reply: 'discard' });
    expect(await h.runtime.quarantine.get(s.quarantineId as string)).toBeDefined();

    const broken = await harness({ config: { policy: { malicious: 'quarantine' } } });
    // The quarantine directory replaced by a file: the copy cannot be written.
    const quarantineDir = join(broken.stateDir, 'quarantine');
    rmSync(quarantineDir, { recursive: true, force: true });
    writeFileSync(quarantineDir, '');
    const c2 = await client(broken);
    const [r] = await c2.message({ raw: CLEAN.replace('Just text.', `${EICAR} 2`) });
    expect((r as { text: string }).text).toMatch(/^451 4\.7\.0 /);
    expect(await broken.summary(1)).toMatchObject({
      action: 'tempfail',
      reason: 'quarantine-failed',
      code: 451,
    });
  });

  it('resets the message on ABORT: the next message on the connection is its own', async () => {
    const h = await harness();
    const c = await client(h);
    c.send({ kind: 'mail', args: ['<first@test.local>'] });
    expect(await c.reply()).toEqual({ kind: 'continue' });
    c.send({ kind: 'rcpt', args: ['<x@example.test>'] });
    c.send({ kind: 'header', name: Buffer.from('Subject'), value: Buffer.from(' aborted') });
    c.send({ kind: 'body', chunk: Buffer.from('half a body') });
    c.send({ kind: 'abort' });
    await c.message({ raw: CLEAN });
    expect(h.seen).toHaveLength(1);
    expect(h.seen[0]!.bytes.toString('latin1')).toBe(CLEAN);
    expect(h.seen[0]!.envelope.recipients).toEqual(['b@example.test']);
    expect(h.logs.events('milter.message_aborted')).toHaveLength(1);
  });

  it('takes macro packets without pairs and several messages on one connection', async () => {
    const h = await harness();
    const c = await client(h);
    for (let i = 0; i < 3; i++) {
      c.send(frame('D', [Buffer.from('T')]));
      expect((await c.message({ raw: CLEAN.replace('clean-1', `clean-${i}`) })).at(-1)).toEqual({
        kind: 'accept',
      });
    }
    expect(h.seen.map((s) => s.envelope.sender)).toEqual(['a@test.local', 'a@test.local', 'a@test.local']);
  });

  it('answers every event when the MTA offers no no-reply flags (an older MTA, miltertest)', async () => {
    const h = await harness();
    const c = await MilterClient.connect(h.port);
    cleanups.push(() => c.close());
    expect(await c.negotiate({ version: 6, actions: 0x1ff, protocol: 0x7f })).toBe(0x7f & WANTED_PROTOCOL);
    c.send({ kind: 'connect', hostname: 'h', family: 'inet', port: 1, address: '192.0.2.1' });
    expect(await c.reply()).toEqual({ kind: 'continue' });
    await c.hello();
    const replies = await c.message({ raw: CLEAN });
    expect(replies.at(-1)).toEqual({ kind: 'accept' });
    // Without HDR_LEADSPC the MTA strips the space after the colon and adds one to values we send.
    expect(value(replies[0])).toMatch(/^clean; /);
  });

  it('takes the client address from CONNECT: a bypass list on the client network applies', async () => {
    const h = await harness({ config: { bypass: { clientNetworks: ['192.0.2.0/24'] } } });
    const c = await MilterClient.connect(h.port);
    cleanups.push(() => c.close());
    await c.negotiate();
    // As a dual-stack MTA may write it: an IPv6: prefix and an IPv4-mapped address.
    await c.hello('IPv6:::ffff:192.0.2.55');
    const replies = await c.message({ raw: CLEAN });
    expect(value(replies.find((r) => r.kind === 'insHeader'))).toMatch(/^ unscanned; reason=bypass:client;/);
    expect(h.seen[0]!.envelope.clientAddress).toBe('192.0.2.55');
  });

  it('monitor mode delivers at once with the header saying so', async () => {
    const h = await harness({ config: { scan: { chain: ['rules'], mode: 'monitor' } } });
    const c = await client(h);
    const replies = await c.message({ raw: CLEAN.replace('Just text.', EICAR) });
    expect(replies.at(-1)).toEqual({ kind: 'accept' });
    expect(value(replies[0])).toMatch(/^ unscanned; reason=monitor;/);
  });

  it('refuses at MAIL when SIZE= is above the limit, and after the body when it grows beyond it', async () => {
    const h = await harness({ config: { milter: { maxMessageSize: 1000 } } });
    const c = await client(h);
    const [atMail] = await c.message({ raw: CLEAN, mailArgs: ['SIZE=1001'] });
    expect(atMail).toEqual({
      kind: 'replycode',
      text: '552 5.3.4 Message exceeds the size limit of 1000 bytes',
    });
    expect(h.seen).toHaveLength(0);
    const [atEnd] = await c.message({ raw: CLEAN.replace('Just text.', 'x'.repeat(2000)) });
    expect(atEnd).toEqual({
      kind: 'replycode',
      text: '552 5.3.4 Message exceeds the size limit of 1000 bytes',
    });
    expect(await h.summary(1)).toMatchObject({ action: 'refused', reason: 'size', code: 552 });
    expect(h.seen).toHaveLength(0);
  });

  it('refuses a mail loop (more Received fields than milter.maxReceived) with 554 5.4.6', async () => {
    const h = await harness({ config: { milter: { maxReceived: 3 } } });
    const c = await client(h);
    const hops = (n: number) => 'Received: from x by y; Thu, 03 Dec 2026 09:00:00 +0000\r\n'.repeat(n);
    expect((await c.message({ raw: hops(3) + CLEAN })).at(-1)).toEqual({ kind: 'accept' });
    const [r] = await c.message({ raw: hops(4) + CLEAN });
    expect((r as { text: string }).text).toMatch(/^554 5\.4\.6 /);
    expect(await h.summary(2)).toMatchObject({ action: 'refused', reason: 'loop', hops: 4 });
  });

  it('answers 451 at the deadline and sends PROGRESS while it waits', async () => {
    const slow = new CountingScanner({ name: 'slow', delayMs: 1500 });
    const h = await harness({
      scanners: [slow],
      config: { milter: { deadline: '400ms' } },
      server: { progressIntervalMs: 100 },
    });
    const c = await client(h);
    const [r] = await c.message({ raw: CLEAN });
    expect((r as { text: string }).text).toMatch(/^451 4\.7\.0 Scanning did not finish in time/);
    expect(c.progress).toBeGreaterThanOrEqual(2);
    expect(await h.summary(1)).toMatchObject({ action: 'tempfail', reason: 'deadline', code: 451 });
  });

  it('closes the connection on an oversized packet with a log line, and keeps serving others', async () => {
    const h = await harness({ server: { maxPacket: 4096 } });
    const c = await client(h);
    c.send(frame('L', [Buffer.from('Subject\0'), Buffer.alloc(5000, 0x61), Buffer.from([0])]));
    await c.whenClosed();
    const [line] = h.logs.events('milter.protocol_error');
    expect(line).toMatchObject({ level: 40, code: 'ERR_MILTER_PROTOCOL', limit: 4096 });
    const other = await client(h);
    expect((await other.message({ raw: CLEAN })).at(-1)).toEqual({ kind: 'accept' });
  });

  it('closes the connection on malformed or out-of-order packets, never crashing', async () => {
    const h = await harness();
    const bad: Buffer[] = [
      frame('L', [Buffer.from('Subject\0')]), // a header without its value
      frame('z'), // an unknown command
      Buffer.from([0, 0, 0, 0]), // a zero length
    ];
    for (const packet of bad) {
      const c = await client(h);
      c.send(packet);
      await c.whenClosed();
    }
    // Before negotiation.
    const early = await MilterClient.connect(h.port);
    early.send({ kind: 'helo', name: 'x' });
    await early.whenClosed();
    // OPTNEG without header actions: we could not mark or clean the mail.
    const noEdits = await MilterClient.connect(h.port);
    noEdits.send({ kind: 'optneg', version: 6, actions: 0x1, protocol: 0x1fffff });
    await noEdits.whenClosed();
    expect(h.logs.events('milter.protocol_error').map((r) => r.code)).toEqual(
      Array(5).fill('ERR_MILTER_PROTOCOL'),
    );
    const c = await client(h);
    expect((await c.message({ raw: CLEAN })).at(-1)).toEqual({ kind: 'accept' });
  });

  it('forgets a message whose MTA goes away during the scan: nothing answered, nothing left behind', async () => {
    const slow = new CountingScanner({ name: 'slow', delayMs: 300 });
    const h = await harness({
      scanners: [slow],
      config: { scan: { chain: ['rules'], memorySpoolThreshold: 10 } },
    });
    const c = await client(h);
    void c.message({ raw: CLEAN }).catch(() => undefined);
    while (slow.calls === 0) await new Promise((r) => setImmediate(r));
    c.close();
    expect(await h.summary(1)).toMatchObject({ action: 'none', reason: 'mta-gone', code: 0 });
    expect(readdirSync(h.runtime.spoolDir)).toEqual([]);
  });

  it('gives connections beyond milter.maxConnections 421 at MAIL', async () => {
    const h = await harness({ config: { milter: { maxConnections: 1 } } });
    const first = await client(h);
    const second = await client(h);
    const [r] = await second.message({ raw: CLEAN });
    expect(r).toEqual({ kind: 'replycode', text: '421 4.7.0 Too many connections, try again later' });
    expect(h.logs.events('milter.too_many')).toHaveLength(1);
    expect((await first.message({ raw: CLEAN })).at(-1)).toEqual({ kind: 'accept' });
  });

  it('shuts down gracefully: the verdict in flight is answered, MAIL gets 421, then it closes', async () => {
    const slow = new CountingScanner({ name: 'slow', delayMs: 400 });
    const h = await harness({ scanners: [slow] });
    const busy = await client(h);
    const idle = await client(h);
    const inFlight = busy.message({ raw: CLEAN });
    while (slow.calls === 0) await new Promise((r) => setImmediate(r));
    const closing = h.server.close();
    const [refused] = await idle.message({ raw: CLEAN });
    expect(refused).toEqual({ kind: 'replycode', text: '421 4.3.2 Shutting down, try again later' });
    expect((await inFlight).at(-1)).toEqual({ kind: 'accept' });
    await closing;
    await busy.whenClosed();
    await idle.whenClosed();
  });

  it('answers a verdict still pending at milter.shutdownTimeout with 451', async () => {
    const slow = new CountingScanner({ name: 'slow', delayMs: 5000 });
    const h = await harness({ scanners: [slow], config: { milter: { shutdownTimeout: '200ms' } } });
    const c = await client(h);
    const inFlight = c.message({ raw: CLEAN });
    while (slow.calls === 0) await new Promise((r) => setImmediate(r));
    await h.server.close();
    const [r] = await inFlight;
    expect((r as { text: string }).text).toMatch(/^451 4\.3\.2 Shutting down/);
    expect(await h.summary(1)).toMatchObject({ action: 'tempfail', reason: 'shutdown' });
  });
});
