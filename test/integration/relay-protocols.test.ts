import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTestCa, type TestCa } from '../support/test-ca.js';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import { EICAR, startRelay } from '../support/relay.js';
import { SmtpTalk } from '../support/smtp-talk.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const raw = (subject: string, body = 'hello') =>
  `From: a@test.local\r\nTo: b@example.test\r\nSubject: ${subject}\r\n\r\n${body}\r\n`;

describe('LMTP', () => {
  it('an LMTP listener in front of an LMTP next hop gives one reply per recipient after the dot', async () => {
    const sink = await startSmtpSink({ lmtp: true });
    cleanup.push(() => sink.close());
    sink.behaviour.lmtpRefuse.set('full@example.test', [452, '4.2.2 Mailbox full']);
    const h = await startRelay({ kind: 'lmtp', host: '127.0.0.1', port: sink.port }, { protocol: 'lmtp' });
    cleanup.push(() => h.close());
    const t = await SmtpTalk.open(h.port);
    expect((await t.read()).text).toMatch(/LMTP/);
    expect((await t.cmd('LHLO mta.test.local')).code).toBe(250);
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<full@example.test>')).code).toBe(250);
    expect((await t.cmd('DATA')).code).toBe(354);
    t.send(`${raw('lmtp')}.\r\n`);
    const first = await t.read();
    const second = await t.read();
    expect(first.code).toBe(250);
    expect(first.text).toMatch(/next hop: delivered to b@example\.test/);
    expect(second.code).toBe(452);
    expect(second.text).toMatch(/^4\.2\.2 Mailbox full/);
    await t.cmd('QUIT');
  });

  it('an SMTP client in front of an LMTP next hop gets a refusal when any recipient failed (never a silent loss)', async () => {
    const sink = await startSmtpSink({ lmtp: true });
    cleanup.push(() => sink.close());
    sink.behaviour.lmtpRefuse.set('full@example.test', [452, '4.2.2 Mailbox full']);
    const h = await startRelay({ kind: 'lmtp', host: '127.0.0.1', port: sink.port });
    cleanup.push(() => h.close());
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
    cleanup.push(() => t.close());
    const r = await t
      .sendMail({
        envelope: { from: 'a@test.local', to: ['b@example.test', 'full@example.test'] },
        raw: raw('x'),
      })
      .then(
        (i) => i.response,
        (e: { response: string }) => e.response,
      );
    expect(r).toMatch(/^452 4\.2\.2 Mailbox full/);
  });
});

describe('STARTTLS and AUTH with a test CA', () => {
  let ca: TestCa;
  let dir: string;
  beforeAll(() => {
    ca = makeTestCa();
    dir = ca.dir;
    writeFileSync(join(dir, 'pass'), 's3cret\n');
  });
  afterAll(() => ca.remove());

  it('accepts STARTTLS in, and hands on over verified STARTTLS with AUTH', async () => {
    const users: string[] = [];
    const sink = await startSmtpSink({
      disabledCommands: [],
      key: readFileSync(join(dir, 'srv.key')),
      cert: readFileSync(join(dir, 'srv.crt')),
      authMethods: ['PLAIN', 'LOGIN'],
      onAuth(auth, _session, cb) {
        users.push(String(auth.username));
        if (auth.username === 'relay' && auth.password === 's3cret') cb(null, { user: 'relay' });
        else cb(Object.assign(new Error('5.7.8 bad credentials'), { responseCode: 535 }));
      },
    });
    cleanup.push(() => sink.close());
    const h = await startRelay(
      { kind: 'smtp', host: '127.0.0.1', port: sink.port },
      {
        tls: { certFile: join(dir, 'srv.crt'), keyFile: join(dir, 'srv.key') },
        nextHopOptions: {
          tls: 'required',
          caFile: join(dir, 'ca.crt'),
          servername: 'sink.test.local',
          authUser: 'relay',
          authPasswordFile: join(dir, 'pass'),
        },
      },
    );
    cleanup.push(() => h.close());
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: h.port,
      secure: false,
      requireTLS: true,
      tls: { ca: readFileSync(join(dir, 'ca.crt')), servername: 'relay.test.local' },
    });
    cleanup.push(() => t.close());
    const info = await t.sendMail({
      envelope: { from: 'a@test.local', to: ['b@example.test'] },
      raw: raw('tls'),
    });
    expect(info.response).toMatch(/^250 /);
    const [got] = await sink.waitFor(1);
    expect(got!.secure).toBe(true);
    expect(got!.user).toBe('relay');
  });

  it('refuses to hand on (451) when TLS is required and the next hop does not offer it', async () => {
    const sink = await startSmtpSink();
    cleanup.push(() => sink.close());
    const h = await startRelay(
      { kind: 'smtp', host: '127.0.0.1', port: sink.port },
      { nextHopOptions: { tls: 'required', caFile: join(dir, 'ca.crt') } },
    );
    cleanup.push(() => h.close());
    const t = await SmtpTalk.open(h.port);
    await t.read();
    await t.cmd('EHLO c.test.local');
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@test.local>')).code).toBe(451);
    t.end();
    expect(sink.messages).toHaveLength(0);
  });

  it('refuses to hand on when the next hop certificate does not verify', async () => {
    const sink = await startSmtpSink({
      disabledCommands: ['AUTH'],
      key: readFileSync(join(dir, 'srv.key')),
      cert: readFileSync(join(dir, 'srv.crt')),
    });
    cleanup.push(() => sink.close());
    const h = await startRelay(
      { kind: 'smtp', host: '127.0.0.1', port: sink.port },
      { nextHopOptions: { tls: 'required', caFile: join(dir, 'ca.crt'), servername: 'wrong.test.local' } },
    );
    cleanup.push(() => h.close());
    const t = await SmtpTalk.open(h.port);
    await t.read();
    await t.cmd('EHLO c.test.local');
    expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    expect((await t.cmd('RCPT TO:<b@test.local>')).code).toBe(451);
    t.end();
  });
});

describe('directory next hop and shutdown', () => {
  it('writes one durable file per delivered message with the envelope on top, and none for EICAR', async () => {
    const out = mkdtempSync(join(tmpdir(), 'sg-delivered-'));
    cleanup.push(() => rmSync(out, { recursive: true, force: true }));
    const h = await startRelay({ kind: 'directory', path: out });
    cleanup.push(() => h.close());
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
    cleanup.push(() => t.close());
    const info = await t.sendMail({
      envelope: { from: 'a@test.local', to: ['b@example.test', 'c@example.test'] },
      raw: raw('to a file'),
    });
    const virus = await t
      .sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw: raw('eicar', EICAR) })
      .catch((e: { responseCode: number }) => e);
    expect((virus as { responseCode: number }).responseCode).toBe(550);
    const files = readdirSync(out);
    expect(files).toHaveLength(1);
    expect(info.response).toContain(files[0]);
    const text = readFileSync(join(out, files[0]!), 'utf8');
    expect(
      text.startsWith(
        'Return-Path: <a@test.local>\r\nX-Envelope-To: <b@example.test>, <c@example.test>\r\nX-Sandgate-Verdict: clean\r\n',
      ),
    ).toBe(true);
    expect(text).toContain('Subject: to a file');
  });

  it('hands clean mail to the CommuniGate Submitted directory as a .sub file in LF line ends', async () => {
    const submitted = mkdtempSync(join(tmpdir(), 'sg-submitted-'));
    cleanup.push(() => rmSync(submitted, { recursive: true, force: true }));
    const h = await startRelay({ kind: 'submitted', path: submitted });
    cleanup.push(() => h.close());
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: h.port, secure: false, ignoreTLS: true });
    cleanup.push(() => t.close());
    await t.sendMail({
      envelope: { from: 'a@test.local', to: ['b@example.test'] },
      raw: raw('to CommuniGate'),
    });
    const files = readdirSync(submitted);
    expect(files).toEqual([expect.stringMatching(/^sandgate-\d+-[0-9a-f]+\.sub$/)]);
    const text = readFileSync(join(submitted, files[0]!), 'utf8');
    expect(text).not.toContain('\r');
    expect(
      text.startsWith('Return-Path: <a@test.local>\nEnvelope-To: b@example.test\nX-Sandgate-Verdict: clean'),
    ).toBe(true);
  });

  it('shuts down gracefully: a message in flight is finished, idle sessions get 421', async () => {
    const sink = await startSmtpSink();
    cleanup.push(() => sink.close());
    const h = await startRelay(
      { kind: 'smtp', host: '127.0.0.1', port: sink.port },
      { shutdownTimeout: '10s' },
    );
    const idle = await SmtpTalk.open(h.port);
    expect((await idle.read()).code).toBe(220);
    const busy = await SmtpTalk.open(h.port);
    await busy.read();
    await busy.cmd('EHLO c.test.local');
    await busy.cmd('MAIL FROM:<a@test.local>');
    await busy.cmd('RCPT TO:<b@example.test>');
    await busy.cmd('DATA');
    const scanning = new Promise<void>((resolve) => {
      const check = () => (h.evaluator.seen.length > 0 ? resolve() : setImmediate(check));
      check();
    });
    busy.send(`${raw('in flight').replace('\r\n\r\n', '\r\nX-Test-Delay: 300\r\n\r\n')}.\r\n`);
    await scanning;
    const closed = h.close();
    expect((await idle.read()).code).toBe(421);
    expect((await busy.read()).code).toBe(250);
    await closed;
    expect(sink.messages).toHaveLength(1);
  });
});
