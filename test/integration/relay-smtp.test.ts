import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import type { MessageSummary } from '../../src/smtp/server.js';
import { EICAR, startRelay } from '../support/relay.js';
import { SmtpTalk } from '../support/smtp-talk.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setup(relay: Record<string, unknown> = {}, extra: Parameters<typeof startRelay>[2] = {}) {
  const sink = await startSmtpSink();
  cleanup.push(() => sink.close());
  const h = await startRelay({ kind: 'smtp', host: '127.0.0.1', port: sink.port }, relay, extra);
  cleanup.push(() => h.close());
  return { sink, h };
}

function transport(port: number) {
  const t = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    name: 'client.test.local',
  });
  cleanup.push(() => Promise.resolve(t.close()));
  return t;
}

const message = (body: string, extraHeaders = '') =>
  `From: a@test.local\r\nTo: b@example.test\r\nSubject: test\r\n${extraHeaders}\r\n${body}\r\n`;

/** Speaks SMTP up to DATA on a raw socket. */
async function openTransaction(port: number, rcpts = ['b@example.test']): Promise<SmtpTalk> {
  const t = await SmtpTalk.open(port);
  expect((await t.read()).code).toBe(220);
  expect((await t.cmd('EHLO client.test.local')).code).toBe(250);
  expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
  for (const r of rcpts) expect((await t.cmd(`RCPT TO:<${r}>`)).code).toBe(250);
  expect((await t.cmd('DATA')).code).toBe(354);
  return t;
}

describe('relay over real sockets (nodemailer client -> relay -> smtp-server sink)', () => {
  it('hands clean mail on byte for byte with its envelope, adding our header, and answers with the next hop reply', async () => {
    const { sink, h } = await setup();
    const raw = message('hello\r\n.leading dot\r\n8bit: h\u00e9llo', 'X-Sandgate-Verdict: forged\r\n');
    const info = await transport(h.port).sendMail({
      envelope: { from: 'a@test.local', to: ['b@example.test', 'c@example.test'] },
      raw: Buffer.from(raw, 'utf8'),
    });
    expect(info.accepted).toEqual(['b@example.test', 'c@example.test']);
    expect(info.response).toMatch(
      /^250 2\.0\.0 Ok: sg-[0-9a-z]+-[0-9a-f]{10} \(next hop: Ok: queued as SINK1\)/,
    );
    const [got] = await sink.waitFor(1);
    expect(got!.sender).toBe('a@test.local');
    expect(got!.recipients).toEqual(['b@example.test', 'c@example.test']);
    const expected = Buffer.concat([
      Buffer.from('X-Sandgate-Verdict: clean\r\n'),
      Buffer.from(raw.replace('X-Sandgate-Verdict: forged\r\n', ''), 'utf8'),
    ]);
    expect(got!.bytes.equals(expected)).toBe(true);
    expect(h.spoolLeftovers()).toEqual([]);
  });

  it('refuses EICAR with 550 5.7.1 naming the threat and hands nothing on', async () => {
    const { sink, h } = await setup();
    const err = await transport(h.port)
      .sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw: message(EICAR) })
      .then(
        () => undefined,
        (e: { responseCode?: number; response?: string }) => e,
      );
    expect(err?.responseCode).toBe(550);
    expect(err?.response).toMatch(/^550 5\.7\.1 Message refused: EICAR-Test-File \(sg-/);
    expect(sink.messages).toHaveLength(0);
    expect(h.evaluator.seen).toHaveLength(1);
  });

  it('refuses to the client a recipient the next hop refuses, and delivers to the other', async () => {
    const { sink, h } = await setup();
    sink.behaviour.refuseRecipients.set('nobody@example.test', [550, '5.1.1 No such user']);
    const info = await transport(h.port).sendMail({
      envelope: { from: 'a@test.local', to: ['nobody@example.test', 'b@example.test'] },
      raw: message('two recipients'),
    });
    expect(info.accepted).toEqual(['b@example.test']);
    expect(info.rejected).toEqual(['nobody@example.test']);
    const rejected = (info as unknown as { rejectedErrors: Array<{ response: string }> }).rejectedErrors;
    expect(rejected[0]!.response).toMatch(/^550 5\.1\.1 No such user/);
    const [got] = await sink.waitFor(1);
    expect(got!.recipients).toEqual(['b@example.test']);
    expect(h.evaluator.seen[0]!.recipients).toEqual(['b@example.test']);
  });

  it('gives a next hop refusal of MAIL to every RCPT, and hands nothing on', async () => {
    const { sink, h } = await setup();
    sink.behaviour.refuseMail = [550, '5.7.1 Sender not welcome'];
    const t = await SmtpTalk.open(h.port);
    await t.read();
    await t.cmd('EHLO client.test.local');
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    for (const rcpt of ['b@example.test', 'c@example.test']) {
      const r = await t.cmd(`RCPT TO:<${rcpt}>`);
      expect(r.code).toBe(550);
      expect(r.text).toContain('Sender not welcome');
    }
    expect((await t.cmd('DATA')).code).toBe(503);
    // The next transaction on the same connection starts afresh.
    sink.behaviour.refuseMail = undefined;
    await t.cmd('RSET');
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await t.cmd('DATA')).code).toBe(354);
    t.send(message('after a refused sender'));
    expect((await t.cmd('.')).code).toBe(250);
    t.end();
    const [got] = await sink.waitFor(1);
    expect(got!.recipients).toEqual(['b@example.test']);
    expect(sink.messages).toHaveLength(1);
  });

  it('passes a next hop 451 at the final dot back as 451', async () => {
    const { sink, h } = await setup();
    sink.behaviour.refuseData = [451, '4.3.0 sink is having a bad day'];
    const err = await transport(h.port)
      .sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw: message('x') })
      .then(
        () => undefined,
        (e: { responseCode?: number; response?: string }) => e,
      );
    expect(err?.responseCode).toBe(451);
    expect(err?.response).toMatch(/^451 4\.3\.0 sink is having a bad day \(sg-/);
  });

  it('passes a next hop 5xx at the final dot back as 5xx', async () => {
    const { sink, h } = await setup();
    sink.behaviour.refuseData = [554, '5.6.0 no thanks'];
    const err = await transport(h.port)
      .sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw: message('x') })
      .then(
        () => undefined,
        (e: { responseCode?: number }) => e,
      );
    expect(err?.responseCode).toBe(554);
  });

  it('answers 451 4.4.1 at RCPT when the next hop is down (MAIL is answered by the relay)', async () => {
    const sink = await startSmtpSink();
    const port = sink.port;
    await sink.close();
    const h = await startRelay(
      { kind: 'smtp', host: '127.0.0.1', port },
      { nextHopOptions: { timeout: '2s' } },
    );
    cleanup.push(() => h.close());
    const t = await SmtpTalk.open(h.port);
    expect((await t.read()).code).toBe(220);
    await t.cmd('EHLO client.test.local');
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    const r = await t.cmd('RCPT TO:<b@example.test>');
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^4\.4\.1 /);
    t.end();
  });

  it('hands nothing on when the client disconnects before the final dot, and leaves no spool behind', async () => {
    const { sink, h } = await setup({}, { memorySpoolThreshold: 1024 });
    const t = await openTransaction(h.port);
    const done = new Promise<MessageSummary>((resolve) => h.relay.once('message', resolve));
    t.send(`Subject: cut\r\n\r\n${'x'.repeat(100_000)}\r\n`);
    t.end();
    expect(await done).toMatchObject({ action: 'none' });
    expect(h.spoolLeftovers()).toEqual([]);
    // A second, complete message proves the relay carries on.
    await transport(h.port).sendMail({
      envelope: { from: 'a@test.local', to: ['b@example.test'] },
      raw: message('after'),
    });
    const got = await sink.waitFor(1);
    expect(got).toHaveLength(1);
    expect(got[0]!.bytes.toString()).toContain('after');
    expect(h.evaluator.seen.map((s) => s.text)).not.toContainEqual(expect.stringContaining('Subject: cut'));
    expect(h.spoolLeftovers()).toEqual([]);
  });

  it('stops the evaluation of a message whose client goes away during the scan, and hands nothing on', async () => {
    const { sink, h } = await setup();
    // A first message on the same connection, so the session's signal has served one message.
    const t = await openTransaction(h.port);
    t.send(message('first'));
    expect((await t.cmd('.')).code).toBe(250);
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await t.cmd('DATA')).code).toBe(354);
    const done = new Promise<MessageSummary>((resolve) => h.relay.once('message', resolve));
    t.send(`${message('slow', 'X-Test-Delay: 60000\r\n')}.\r\n`);
    await vi.waitFor(() => expect(h.evaluator.seen).toHaveLength(2));
    t.end();
    const summary = await done;
    expect(h.evaluator.aborted).toEqual([h.evaluator.seen[1]!.msgId]);
    expect(summary.ms).toBeLessThan(30_000);
    expect(sink.messages).toHaveLength(1);
  });

  it('answers 552 after the final dot for an oversized message and the session goes on', async () => {
    const { sink, h } = await setup({}, { maxMessageSize: 10_000, memorySpoolThreshold: 1024 });
    const t = await openTransaction(h.port);
    t.send(`Subject: big\r\n\r\n${'y'.repeat(20_000)}\r\n.\r\n`);
    const r = await t.read();
    expect(r.code).toBe(552);
    expect(r.text).toMatch(/^5\.3\.4 /);
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await t.cmd('DATA')).code).toBe(354);
    t.send('Subject: small\r\n\r\nok\r\n.\r\n');
    expect((await t.read()).code).toBe(250);
    await t.cmd('QUIT');
    const got = await sink.waitFor(1);
    expect(got).toHaveLength(1);
    expect(got[0]!.bytes.toString()).toContain('Subject: small');
    expect(h.spoolLeftovers()).toEqual([]);
  });

  it('cannot be used to smuggle a second message with a bare-LF dot', async () => {
    const { sink, h } = await setup();
    const t = await openTransaction(h.port);
    const smuggle =
      'Subject: first\r\n\r\nbody\n.\nMAIL FROM:<evil@attacker.test>\nRCPT TO:<victim@example.test>\nDATA\nSubject: smuggled\n\nowned\n.\n' +
      'tail\r.\rMAIL FROM:<evil2@attacker.test>\r\n.\r\n';
    t.send(smuggle);
    expect((await t.read()).code).toBe(250);
    await t.cmd('QUIT');
    const got = await sink.waitFor(1);
    expect(got).toHaveLength(1);
    expect(sink.rcptLog).toEqual(['b@example.test']);
    const text = got[0]!.bytes.toString('latin1');
    // Every line ending is CRLF, and the would-be terminators arrived as data.
    expect(text).not.toMatch(/[^\r]\n|\r[^\n]/);
    expect(text).toContain('body\r\n.\r\nMAIL FROM:<evil@attacker.test>\r\n');
    expect(text).toContain('tail\r\n.\r\nMAIL FROM:<evil2@attacker.test>\r\n');
  });

  it('maps quarantine, discard and tempfail to 250, 250 and 451 without handing on', async () => {
    const { sink, h } = await setup();
    const t = transport(h.port);
    const send = (action: string) =>
      t
        .sendMail({
          envelope: { from: 'a@test.local', to: ['b@example.test'] },
          raw: message('x', `X-Test-Action: ${action}\r\n`),
        })
        .then(
          (i) => i.response,
          (e: { response: string }) => e.response,
        );
    expect(await send('quarantine')).toMatch(/^250 2\.0\.0 Ok: quarantined as q-test-1 \(sg-/);
    expect(await send('discard')).toMatch(/^250 2\.0\.0 Ok: sg-/);
    expect(await send('tempfail')).toMatch(/^451 4\.7\.0 /);
    expect(sink.messages).toHaveLength(0);
  });

  it('answers 451 when scanning overruns relay.deadline', async () => {
    const { sink, h } = await setup({ deadline: '300ms' });
    const started = Date.now();
    const r = await transport(h.port)
      .sendMail({
        envelope: { from: 'a@test.local', to: ['b@example.test'] },
        raw: message('x', 'X-Test-Delay: 5000\r\n'),
      })
      .then(
        (i) => i.response,
        (e: { response: string }) => e.response,
      );
    expect(r).toMatch(/^451 4\.7\.0 Scanning did not finish in time/);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(sink.messages).toHaveLength(0);
  });

  it('answers 451 4.3.0 when the evaluator throws', async () => {
    const { sink, h } = await setup();
    h.evaluator.throwError = true;
    const r = await transport(h.port)
      .sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw: message('x') })
      .then(
        (i) => i.response,
        (e: { response: string }) => e.response,
      );
    expect(r).toMatch(/^451 4\.3\.0 /);
    expect(sink.messages).toHaveLength(0);
  });

  it('refuses clients outside relay.allowedClients', async () => {
    const { h } = await setup({ allowedClients: ['10.0.0.0/8'] });
    const t = await SmtpTalk.open(h.port);
    const r = await t.read();
    expect(r.code).toBe(554);
    await t.whenClosed();
  });

  it('answers 421 over relay.maxClients', async () => {
    const { h } = await setup({ maxClients: 1 });
    const first = await SmtpTalk.open(h.port);
    expect((await first.read()).code).toBe(220);
    const second = await SmtpTalk.open(h.port);
    expect((await second.read()).code).toBe(421);
    first.end();
    second.end();
  });

  it('refuses a looping message by its Received count', async () => {
    const { sink, h } = await setup({ maxReceived: 5 });
    const received = 'Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n'.repeat(6);
    const r = await transport(h.port)
      .sendMail({
        envelope: { from: 'a@test.local', to: ['b@example.test'] },
        raw: received + message('loop'),
      })
      .then(
        (i) => i.response,
        (e: { response: string }) => e.response,
      );
    expect(r).toMatch(/^554 5\.4\.6 /);
    expect(sink.messages).toHaveLength(0);
  });

  it('shares next-hop sessions between client connections: an idle client connection holds none', async () => {
    const { sink, h } = await setup();
    const a = await openTransaction(h.port);
    a.send('Subject: a\r\n\r\nbody\r\n.\r\n');
    expect((await a.read()).code).toBe(250);
    // a stays connected and idle (as in an MTA's connection cache); b's message takes the same session.
    const b = await openTransaction(h.port);
    b.send('Subject: b\r\n\r\nbody\r\n.\r\n');
    expect((await b.read()).code).toBe(250);
    await a.cmd('QUIT');
    await b.cmd('QUIT');
    expect(await sink.waitFor(2)).toHaveLength(2);
    expect(sink.connections).toBe(1);
  });

  it('ends the next hop transaction too when the client sends RSET, so its next MAIL is not nested', async () => {
    const { sink, h } = await setup();
    const t = await SmtpTalk.open(h.port);
    expect((await t.read()).code).toBe(220);
    await t.cmd('EHLO mta.test.local');
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await t.cmd('RSET')).code).toBe(250);
    expect((await t.cmd('MAIL FROM:<c@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<d@example.test>')).code).toBe(250);
    expect((await t.cmd('DATA')).code).toBe(354);
    t.send('Subject: after rset\r\n\r\nbody\r\n.\r\n');
    expect((await t.read()).code).toBe(250);
    await t.cmd('QUIT');
    const [got] = await sink.waitFor(1);
    expect(got!.sender).toBe('c@test.local');
    expect(got!.recipients).toEqual(['d@example.test']);
  });

  it('sends XFORWARD one command at a time to a next hop without PIPELINING', async () => {
    const sink = await startSmtpSink({ hidePIPELINING: true });
    cleanup.push(() => sink.close());
    const h = await startRelay({ kind: 'smtp', host: '127.0.0.1', port: sink.port }, {});
    cleanup.push(() => h.close());
    const t = await SmtpTalk.open(h.port);
    expect((await t.read()).code).toBe(220);
    await t.cmd('EHLO mta.test.local');
    expect((await t.cmd('XFORWARD NAME=client.example ADDR=192.0.2.7 HELO=helo.example')).code).toBe(250);
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await t.cmd('DATA')).code).toBe(354);
    t.send('Subject: x\r\n\r\nbody\r\n.\r\n');
    expect((await t.read()).code).toBe(250);
    await t.cmd('QUIT');
    const [got] = await sink.waitFor(1);
    expect(got!.xforward).toMatchObject({ ADDR: '192.0.2.7', NAME: 'client.example', HELO: 'helo.example' });
  });

  it('passes XFORWARD to a next hop that offers it, and reuses the next-hop connection', async () => {
    const { sink, h } = await setup();
    const t = await SmtpTalk.open(h.port);
    expect((await t.read()).code).toBe(220);
    await t.cmd('EHLO mta.test.local');
    expect(
      (await t.cmd('XFORWARD NAME=client.example ADDR=192.0.2.7 PROTO=ESMTP HELO=helo.example')).code,
    ).toBe(250);
    for (let i = 0; i < 2; i++) {
      expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
      expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
      expect((await t.cmd('DATA')).code).toBe(354);
      t.send(`Subject: ${i}\r\n\r\nbody\r\n.\r\n`);
      expect((await t.read()).code).toBe(250);
    }
    await t.cmd('QUIT');
    const got = await sink.waitFor(2);
    expect(got[0]!.xforward).toMatchObject({
      ADDR: '192.0.2.7',
      NAME: 'client.example',
      HELO: 'helo.example',
    });
    expect(sink.connections).toBe(1);
  });

  it('believes XFORWARD from trusted peers given as a CIDR block, and from nobody else', async () => {
    for (const [trustedPeers, believed] of [
      [['127.0.0.0/8'], true],
      [['10.0.0.0/8', '192.0.2.1'], false],
    ] as const) {
      const { sink, h } = await setup({ trustedPeers });
      const t = await SmtpTalk.open(h.port);
      expect((await t.read()).code).toBe(220);
      const ehlo = await t.cmd('EHLO mta.test.local');
      expect(/XFORWARD/.test(ehlo.text), String(trustedPeers)).toBe(believed);
      const xf = await t.cmd('XFORWARD NAME=client.example ADDR=192.0.2.7 PROTO=ESMTP HELO=helo.example');
      expect(xf.code === 250, String(trustedPeers)).toBe(believed);
      expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
      expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
      expect((await t.cmd('DATA')).code).toBe(354);
      t.send('Subject: cidr\r\n\r\nbody\r\n.\r\n');
      expect((await t.read()).code).toBe(250);
      await t.cmd('QUIT');
      const [got] = await sink.waitFor(1);
      // Not believed: the next hop hears of the client the relay itself saw, with its name
      // [UNAVAILABLE] (reverse lookups are off), which the sink keeps as an empty name.
      expect(got!.xforward, String(trustedPeers)).toMatchObject(
        believed ? { ADDR: '192.0.2.7', NAME: 'client.example' } : { ADDR: '127.0.0.1', NAME: '' },
      );
    }
  });
});
