import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { recorder } from '../support/recording-logger.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { postfixAvailable, startPostfix } from '../support/postfix.js';
import { startRelay } from '../support/relay.js';
import { SmtpTalk } from '../support/smtp-talk.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setup(
  sinkOptions: Parameters<typeof startSmtpSink>[0],
  nextHopOptions: Record<string, unknown> = { xclient: true },
) {
  const sink = await startSmtpSink(sinkOptions);
  cleanup.push(() => sink.close());
  const log = recorder('trace');
  const h = await startRelay(
    { kind: 'smtp', host: '127.0.0.1', port: sink.port },
    { nextHopOptions },
    { log: log.root },
  );
  cleanup.push(() => h.close());
  return { sink, h, log: log.lines };
}

/** A client connection to the relay (from 127.0.0.1, a trusted peer), optionally with its own XCLIENT. */
async function client(port: number, xclient?: string): Promise<SmtpTalk> {
  const t = await SmtpTalk.open(port);
  cleanup.push(() => Promise.resolve(t.end()));
  expect((await t.read()).code).toBe(220);
  expect((await t.cmd('EHLO mta.test.local')).code).toBe(250);
  if (xclient !== undefined) {
    expect((await t.cmd(`XCLIENT ${xclient}`)).code).toBe(220);
    expect((await t.cmd('EHLO mta.test.local')).code).toBe(250);
  }
  return t;
}

async function send(t: SmtpTalk, subject: string): Promise<void> {
  expect((await t.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
  expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
  expect((await t.cmd('DATA')).code).toBe(354);
  t.send(`Subject: ${subject}\r\n\r\nbody\r\n.\r\n`);
  expect((await t.read()).code).toBe(250);
}

async function lastMessage(sink: SmtpSink, n: number) {
  const got = await sink.waitFor(n);
  return got[n - 1]!;
}

describe('relay passes the client on with XCLIENT (relay.nextHopOptions.xclient)', () => {
  it('sends a trusted peer’s XCLIENT client on before MAIL, instead of XFORWARD; a session that cannot change its client is not reused', async () => {
    // smtp-server takes one XCLIENT ADDR per connection and then stops offering it.
    const { sink, h } = await setup({ useXClient: true });
    const a = await client(h.port, 'ADDR=192.0.2.9 NAME=client.example HELO=helo.example');
    await send(a, 'from a');
    const m1 = await lastMessage(sink, 1);
    expect(m1.xclient).toMatchObject({
      ADDR: '192.0.2.9',
      NAME: 'client.example',
      HELO: 'helo.example',
      PROTO: 'ESMTP',
      LOGIN: '[UNAVAILABLE]',
    });
    expect(m1.client).toMatchObject({ address: '192.0.2.9', hostname: 'client.example' });
    expect(m1.xforward).toEqual({});
    expect(sink.xclientLog).toHaveLength(1);
    expect(sink.xclientLog[0]).toMatch(/^XCLIENT NAME=client\.example ADDR=192\.0\.2\.9 PORT=\d+ /);

    // Another client connection that just connects: its own address goes, on a new session,
    // since the first one belongs to 192.0.2.9 for good.
    const b = await client(h.port);
    await send(b, 'from b');
    const m2 = await lastMessage(sink, 2);
    // No DNS lookups in sandgate: a name nobody told us goes as "not known for now"; the sink
    // offers no DESTADDR/DESTPORT, so they are not sent.
    expect(sink.xclientLog[1]).toBe(
      `XCLIENT NAME=[TEMPUNAVAIL] ADDR=127.0.0.1 PORT=${b.socket.localPort} PROTO=ESMTP HELO=mta.test.local LOGIN=[UNAVAILABLE]`,
    );
    expect(m2.xclient).toMatchObject({ ADDR: '127.0.0.1', HELO: 'mta.test.local' });
    expect(m2.client.address).toBe('127.0.0.1');
    expect(m2.client.port).toBe(b.socket.localPort);
    expect(sink.connections).toBe(2);
    expect(h.spoolLeftovers()).toEqual([]);
  });

  it('re-identifies a pooled session per transaction: the next client connection’s message carries its own client', async () => {
    // A next hop like Postfix or Exim: XCLIENT may be sent again on the same connection.
    const { sink, h } = await setup({ useXClient: true, xclientRepeat: true });
    const a = await client(h.port, 'ADDR=192.0.2.9 NAME=client.example HELO=helo.example LOGIN=alice');
    await send(a, 'a1');
    const b = await client(h.port, 'ADDR=198.51.100.7 NAME=other.example HELO=other-helo.example');
    await send(b, 'b1');
    await send(b, 'b2');
    await send(a, 'a2');
    const got = await sink.waitFor(4);
    expect(sink.connections).toBe(1);
    expect(got[0]!.xclient).toMatchObject({ ADDR: '192.0.2.9', NAME: 'client.example', LOGIN: 'alice' });
    for (const m of [got[1]!, got[2]!]) {
      expect(m.xclient).toMatchObject({
        ADDR: '198.51.100.7',
        NAME: 'other.example',
        HELO: 'other-helo.example',
        // the first client's login does not stay on the shared session
        LOGIN: '[UNAVAILABLE]',
      });
      expect(m.client.address).toBe('198.51.100.7');
    }
    expect(got[3]!.xclient).toMatchObject({ ADDR: '192.0.2.9', NAME: 'client.example', LOGIN: 'alice' });
    // b2 found the session already b's: no XCLIENT for it.
    expect(sink.xclientLog).toHaveLength(3);
    expect(got.every((m) => Object.keys(m.xforward).length === 0)).toBe(true);
  });

  it('with xclient off (the default) passes the client on with XFORWARD as before', async () => {
    const { sink, h } = await setup({ useXClient: true }, {});
    const a = await client(h.port, 'ADDR=192.0.2.9 NAME=client.example HELO=helo.example');
    await send(a, 'x');
    const m = await lastMessage(sink, 1);
    expect(sink.xclientLog).toEqual([]);
    expect(m.xclient).toEqual({});
    expect(m.xforward).toMatchObject({ ADDR: '192.0.2.9', NAME: 'client.example', HELO: 'helo.example' });
  });

  it('falls back to XFORWARD when the next hop refuses XCLIENT, logs it, and does not reuse that session', async () => {
    const { sink, h, log } = await setup({ useXClient: true });
    sink.behaviour.refuseXclient = [550, '5.7.0 Error: insufficient authorization'];
    const a = await client(h.port, 'ADDR=192.0.2.9 NAME=client.example HELO=helo.example');
    await send(a, 'x');
    const m = await lastMessage(sink, 1);
    expect(sink.xclientLog).toHaveLength(1);
    expect(m.xclient).toEqual({});
    expect(m.xforward).toMatchObject({ ADDR: '192.0.2.9', NAME: 'client.example', HELO: 'helo.example' });
    const refused = log.filter((l) => l.event === 'relay.xclient_refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ level: 'warn', code: 550, fallback: 'xforward' });

    await send(a, 'y');
    await sink.waitFor(2);
    expect(sink.xclientLog).toHaveLength(2);
    expect(sink.connections).toBe(2);
  });

  it('keeps lockstep: a recipient the next hop refuses under the forwarded client is refused to the client', async () => {
    const { sink, h } = await setup({ useXClient: true, xclientRepeat: true });
    sink.behaviour.refuseRecipients.set('nobody@example.test', [550, '5.1.1 No such user']);
    const a = await client(h.port, 'ADDR=192.0.2.9 NAME=client.example HELO=helo.example');
    expect((await a.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    const r = await a.cmd('RCPT TO:<nobody@example.test>');
    expect(r.code).toBe(550);
    expect(r.text).toMatch(/^5\.1\.1 No such user/);
    expect((await a.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await a.cmd('DATA')).code).toBe(354);
    a.send('Subject: z\r\n\r\nbody\r\n.\r\n');
    expect((await a.read()).code).toBe(250);
    const m = await lastMessage(sink, 1);
    expect(m.recipients).toEqual(['b@example.test']);
    expect(m.xclient).toMatchObject({ ADDR: '192.0.2.9' });
  });
});

/** Waits for a condition that other processes make true (a Postfix reload), checking every 50 ms. */
async function until(what: string, check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.runIf(postfixAvailable())('relay passes the client on with XCLIENT to a real Postfix', () => {
  it('Postfix judges the forwarded client with its own access rules, and a direct client as itself', async () => {
    const sink = await startSmtpSink();
    cleanup.push(() => sink.close());
    const postfix = await startPostfix({ filterPort: 1, relayhostPort: sink.port });
    cleanup.push(() => postfix.stop());
    // The re-injection smtpd (permit_mynetworks for 127.0.0.0/8, else reject) also lets us send XCLIENT.
    const etc = join(postfix.dir, 'etc');
    const set = spawnSync(
      'postconf',
      ['-c', etc, '-P', `127.0.0.1:${postfix.reinjectPort}/inet/smtpd_authorized_xclient_hosts=127.0.0.0/8`],
      { encoding: 'utf8' },
    );
    expect(set.status, set.stderr).toBe(0);
    expect(spawnSync('/usr/sbin/postfix', ['-c', etc, 'reload']).status).toBe(0);
    await until('XCLIENT offered after the reload', async () => {
      const t = await SmtpTalk.open(postfix.reinjectPort);
      try {
        await t.read();
        return /^XCLIENT /m.test((await t.cmd('EHLO probe.test.local')).text);
      } finally {
        t.end();
      }
    });

    const h = await startRelay(
      { kind: 'smtp', host: '127.0.0.1', port: postfix.reinjectPort },
      { nextHopOptions: { xclient: true } },
    );
    cleanup.push(() => h.close());

    // A trusted peer forwards a client outside Postfix's mynetworks: Postfix refuses the
    // recipient for that client, and the refusal is the client's RCPT reply.
    const a = await client(h.port, 'ADDR=192.0.2.9 NAME=client.example HELO=helo.example');
    expect((await a.cmd('MAIL FROM:<a@test.local>')).code).toBe(250);
    const refused = await a.cmd('RCPT TO:<b@example.test>');
    expect(refused.code).toBe(554);
    expect(refused.text).toMatch(/^5\.7\.1 /);
    await a.cmd('QUIT');
    expect(
      await postfix.waitForLog(
        /reject: RCPT from client\.example\[192\.0\.2\.9\]: 554 .*proto=ESMTP helo=<helo\.example>/,
      ),
    ).toMatch(/reject: RCPT from client\.example\[192\.0\.2\.9\]: 554 .*proto=ESMTP helo=<helo\.example>/);

    // A client that connects to the relay itself (127.0.0.1, in mynetworks) is accepted as itself.
    const b = await client(h.port);
    await send(b, 'direct');
    await b.cmd('QUIT');
    const [m] = await sink.waitFor(1);
    expect(m!.bytes.toString()).toMatch(/Subject: direct/);
    expect(await postfix.waitForLog(/client=unknown\[127\.0\.0\.1\]/)).toMatch(
      /client=unknown\[127\.0\.0\.1\]/,
    );
  });
});
