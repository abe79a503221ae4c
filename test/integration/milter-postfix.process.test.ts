/**
 * `sandgate milter` behind a real Postfix (smtpd_milters = inet:127.0.0.1:PORT, environment.md
 * 2.1): client -> Postfix smtpd -> milter -> Postfix queue -> relayhost (the sink). The milters
 * run as real processes of the built CLI, so one can be killed with SIGKILL mid-message.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyseMessage } from '../../src/core/content-key.js';
import { BufferMessage } from '../../src/mime/spool.js';
import {
  defaultVerdict,
  FAKE_PT_TOKEN,
  startFakePtSandbox,
  type FakePtSandbox,
} from '../fakes/fake-pt-sandbox.js';
import { startSmtpSink, type SinkMessage, type SmtpSink } from '../fakes/smtp-sink.js';
import { runSandgate } from '../support/cli.js';
import { freePort } from '../support/free-port.js';
import { startMilterProcess, type MilterProcess } from '../support/milter-process.js';
import { postfixAvailable, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { EICAR } from '../support/relay.js';
import { startRelayProcess } from '../support/relay-process.js';
import { SmtpTalk } from '../support/smtp-talk.js';

/** How long the fake PT Sandbox takes per task: longer than the PT milter's deadline. */
const TASK_MS = 1500;

interface Site {
  readonly dir: string;
  readonly configFile: string;
  milter: MilterProcess;
}

describe.runIf(postfixAvailable())('sandgate milter behind a real Postfix', () => {
  let sink: SmtpSink;
  let postfix: PostfixInstance;
  let sandbox: FakePtSandbox;
  let root: string;
  /** The rules scanner; the PT Sandbox fake (deadline 500 ms); one to be killed mid-message. */
  const ports = { rules: 0, pt: 0, kill: 0 };
  const sites: Partial<Record<keyof typeof ports, Site>> = {};

  async function startSite(name: keyof typeof ports, extra: Record<string, unknown> = {}): Promise<Site> {
    const dir = join(root, name);
    const configFile = join(dir, 'sandgate.yaml');
    const tokenFile = join(root, 'pt.token');
    writeFileSync(
      configFile,
      JSON.stringify({
        stateDir: join(dir, 'state'),
        scan: { chain: ['rules'] },
        scanners: {
          ptSandbox: {
            url: sandbox.url,
            tokenFile,
            polling: { firstDelay: '100ms', interval: '100ms' },
            maxTaskAge: '60s',
          },
        },
        milter: { listen: `inet:127.0.0.1:${ports[name]}` },
        ...extra,
      }),
    );
    const site: Site = { dir, configFile, milter: await startMilterProcess(configFile) };
    sites[name] = site;
    return site;
  }

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sg-milter-postfix-'));
    for (const name of Object.keys(ports)) mkdirSync(join(root, name), { recursive: true });
    writeFileSync(join(root, 'pt.token'), FAKE_PT_TOKEN);
    sink = await startSmtpSink();
    sandbox = await startFakePtSandbox({
      verdictFor: (bytes) =>
        /X-Test-Verdict: SLOW/.test(bytes.toString('latin1'))
          ? defaultVerdict(bytes, 60_000)
          : { ...defaultVerdict(bytes), durationMs: TASK_MS },
    });
    const taken = new Set<number>();
    for (const name of Object.keys(ports) as Array<keyof typeof ports>) {
      let p = await freePort();
      while (taken.has(p)) p = await freePort();
      taken.add(p);
      ports[name] = p;
    }
    postfix = await startPostfix({
      milterPorts: [ports.rules, ports.pt, ports.kill],
      relayhostPort: sink.port,
    });
    await startSite('rules');
    await startSite('pt', {
      scan: { chain: ['rules', 'pt-sandbox'] },
      milter: { listen: `inet:127.0.0.1:${ports.pt}`, deadline: '500ms' },
    });
    await startSite('kill', {
      scan: { chain: ['rules', 'pt-sandbox'] },
      milter: { listen: `inet:127.0.0.1:${ports.kill}`, deadline: '30s' },
    });
  });

  afterAll(async () => {
    for (const s of Object.values(sites)) await s?.milter.stop();
    await postfix?.stop();
    await sink?.close();
    await sandbox?.close();
    rmSync(root, { recursive: true, force: true });
  });

  /** Sends through Postfix's smtpd in front of `milter`; resolves with the SMTP reply. */
  async function send(
    milter: keyof typeof ports,
    raw: string | Buffer,
    envelope = { from: 'a@test.local', to: ['b@example.test'] },
  ): Promise<{ code: number; text: string }> {
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: postfix.inPortForMilter(ports[milter]),
      secure: false,
      ignoreTLS: true,
      name: 'client.test.local',
    });
    try {
      const info = await t.sendMail({ envelope, raw });
      return { code: Number(info.response.slice(0, 3)), text: info.response };
    } catch (err) {
      const e = err as { responseCode?: number; response?: string };
      return { code: e.responseCode ?? 0, text: e.response ?? String(err) };
    } finally {
      t.close();
    }
  }

  /** The sink's message whose Message-ID is `id`, once it has arrived (Postfix delivers from its queue). */
  async function delivered(id: string): Promise<SinkMessage> {
    for (;;) {
      const hit = sink.messages.find((m) => m.bytes.includes(`Message-ID: <${id}>`));
      if (hit) return hit;
      await sink.waitFor(sink.messages.length + 1);
    }
  }

  const mail = (id: string, body: string, extra = '') =>
    `From: Alice <a@test.local>\r\nTo: b@example.test\r\nSubject: milter ${id}\r\n` +
    `Message-ID: <${id}@test.local>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n${extra}\r\n${body}`;

  const bodyOf = (b: Buffer) => b.subarray(b.indexOf('\r\n\r\n') + 4);

  it('delivers clean mail with the verdict header on top and the body bytes unchanged', async () => {
    const body = 'Line one.\r\n.A line that starts with a dot.\r\n\r\n  indented\r\nlast\r\n';
    const r = await send('rules', mail('clean-1', body));
    expect(r.code).toBe(250);
    const m = await delivered('clean-1@test.local');
    expect(bodyOf(m.bytes).toString('latin1')).toBe(body);
    const text = m.bytes.toString('latin1');
    // INSHEADER 0 and 1 put ours above Postfix's own Received field, in the relay's order.
    expect(text).toMatch(
      /^X-Sandgate-Verdict: clean; reason=clean; scanners=rules:clean; id=sg-[^\r\n]+\r\nX-Sandgate-Mark: v=1; k=clean; [^\r\n]+\r\nReceived: from client\.test\.local/,
    );
    const summary = await sites.rules!.milter.waitForRecord(
      (x) => x.event === 'milter.message' && x.action === 'deliver',
    );
    expect(summary).toMatchObject({ code: 250, reply: 'accept' });
    // Postfix's queue id (macro i) is in our line, to follow the message into Postfix's log.
    expect(postfix.maillog()).toContain(String(summary.queueId));
  });

  it('removes a forged X-Sandgate-Verdict (every copy) and adds its own', async () => {
    const r = await send(
      'rules',
      mail(
        'strip-1',
        'hello\r\n',
        'X-Sandgate-Verdict: clean; reason=clean; forged\r\nX-Sandgate-Verdict: clean; forged twice\r\n',
      ),
    );
    expect(r.code).toBe(250);
    const text = (await delivered('strip-1@test.local')).bytes.toString('latin1');
    expect(text).not.toContain('forged');
    expect(text.match(/^X-Sandgate-Verdict:/gm)).toHaveLength(1);
    expect(text).toMatch(/^X-Sandgate-Verdict: clean; reason=clean; scanners=rules:clean; id=sg-/m);
  });

  it('refuses EICAR with 550 5.7.1 inside the client session: nothing queued, no bounce', async () => {
    const before = sink.messages.length;
    const r = await send('rules', mail('eicar-1', `${EICAR}\r\n`));
    expect(r.code).toBe(550);
    expect(r.text).toMatch(/^550 5\.7\.1 Message refused: .*EICAR/);
    await sites.rules!.milter.waitForRecord((x) => x.event === 'milter.message' && x.action === 'reject');
    // The refusal happened before Postfix took the message: its log says milter-reject, no queue entry.
    await postfix.waitForLog(/milter-reject: END-OF-MESSAGE .*: 5\.7\.1 Message refused: .*EICAR/);
    const probe = await send('rules', mail('after-eicar', 'x\r\n'));
    expect(probe.code).toBe(250);
    await delivered('after-eicar@test.local');
    expect(sink.messages.slice(before).some((m) => m.bytes.includes('eicar-1'))).toBe(false);
    expect(sink.messages.some((m) => /Undelivered Mail/.test(m.bytes.toString('latin1')))).toBe(false);
  });

  it('passes 8BITMIME and SMTPUTF8 mail through with its bytes unchanged', async () => {
    const t = await SmtpTalk.open(postfix.inPortForMilter(ports.rules));
    try {
      expect((await t.read()).code).toBe(220);
      expect((await t.cmd('EHLO client.test.local')).text).toMatch(/SMTPUTF8/);
      expect((await t.cmd('MAIL FROM:<j\u00f6rg@test.local> SMTPUTF8 BODY=8BITMIME')).code).toBe(250);
      expect((await t.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
      expect((await t.cmd('DATA')).code).toBe(354);
      const raw = Buffer.from(
        mail(
          'utf8-1',
          'Gr\u00fc\u00dfe aus K\u00f6ln, \u65e5\u672c\u8a9e.\r\n\u00e9t\u00e9\r\n',
          'X-Name: J\u00f6rg\r\n',
        ),
        'utf8',
      );
      t.send(Buffer.concat([raw, Buffer.from('.\r\n')]));
      expect((await t.read()).code).toBe(250);
      await t.cmd('QUIT');
    } finally {
      t.end();
    }
    const m = await delivered('utf8-1@test.local');
    expect(m.sender).toBe('j\u00f6rg@test.local');
    expect(bodyOf(m.bytes).toString('utf8')).toBe(
      'Gr\u00fc\u00dfe aus K\u00f6ln, \u65e5\u672c\u8a9e.\r\n\u00e9t\u00e9\r\n',
    );
    expect(m.bytes.toString('utf8')).toContain('\r\nX-Name: J\u00f6rg\r\n');
    expect(m.bytes.toString('utf8')).toMatch(/^X-Sandgate-Verdict: clean;/);
  });

  it('answers 451 while the sandbox analyses, then the retry from the cache: one task', async () => {
    const raw = mail('pt-1', 'please analyse\r\n');
    const first = await send('pt', raw);
    expect(first.code).toBe(451);
    expect(first.text).toMatch(/^451 4\.7\.0 /);
    let final = first;
    const giveUpAt = Date.now() + 20_000;
    while (final.code === 451 && Date.now() < giveUpAt) final = await send('pt', raw);
    expect(final.code).toBe(250);
    const m = await delivered('pt-1@test.local');
    expect(m.bytes.toString('latin1')).toMatch(
      /^X-Sandgate-Verdict: clean; reason=clean; scanners=rules:clean,pt-sandbox:clean; id=sg-/,
    );
    const answered = await sites.pt!.milter.waitForRecord(
      (x) => x.event === 'milter.message' && x.code === 250,
    );
    expect(answered.outcomes).toEqual(['rules:clean', expect.stringMatching(/^pt-sandbox:clean:cached@/)]);
    expect(sandbox.tasksCreated()).toBe(1);
    expect(sink.messages.filter((x) => x.bytes.includes('pt-1@test.local'))).toHaveLength(1);
  });

  it('killed mid-message: Postfix applies its default action (tempfail), and the message is not lost', async () => {
    const site = sites.kill!;
    const tasks = sandbox.tasksCreated();
    const raw = mail('killed-1', 'X-Test-Verdict: SLOW\r\n');
    const sending = send('kill', raw);
    // The milter is deciding end-of-message (its sandbox task exists): kill it now.
    while (sandbox.tasksCreated() === tasks) await new Promise((r) => setTimeout(r, 10));
    await site.milter.kill();
    const r = await sending;
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^451 4\.7\.1 /);
    await postfix.waitForLog(/milter inet:127\.0\.0\.1:\d+: can't read SMFIC_BODYEOB reply packet header/);
    // Postfix took nothing: the client keeps the message and sends it again to a milter that is back.
    site.milter = await startMilterProcess(site.configFile);
    const again = await send('kill', raw.replace('X-Test-Verdict: SLOW', 'now clean'));
    expect(again.code).toBe(250);
    await delivered('killed-1@test.local');
    expect(sink.messages.filter((x) => x.bytes.includes('killed-1@test.local'))).toHaveLength(1);
  });

  it('gives a message the same content key through the milter as through the relay', async () => {
    // Folded fields, a tab continuation and an empty value: Postfix joins folded lines with a bare
    // LF and we rebuild them; the Received field Postfix adds is hidden from milters.
    const raw =
      'From: Alice <a@test.local>\r\nTo: b@example.test\r\nSubject: the same\r\n message\r\n' +
      'Message-ID: <same-1@test.local>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n' +
      'X-Folded: one\r\n\ttwo\r\nX-Empty:\r\n\r\n' +
      `first line\r\n${EICAR}\r\n`;
    expect((await send('rules', raw)).code).toBe(550);
    const viaMilter = await sites.rules!.milter.waitForRecord(
      (x) =>
        x.event === 'milter.message' &&
        x.action === 'reject' &&
        typeof x.quarantineId === 'string' &&
        x.bytes === Buffer.byteLength(raw),
    );

    const relayDir = join(root, 'relay');
    mkdirSync(relayDir, { recursive: true });
    const relayConfig = join(relayDir, 'sandgate.yaml');
    writeFileSync(
      relayConfig,
      JSON.stringify({
        stateDir: join(relayDir, 'state'),
        scan: { chain: ['rules'] },
        relay: { listen: '127.0.0.1:0', nextHop: `directory:${join(relayDir, 'out')}` },
      }),
    );
    const relay = await startRelayProcess(relayConfig);
    try {
      const t = nodemailer.createTransport({
        host: '127.0.0.1',
        port: relay.relayPort,
        secure: false,
        ignoreTLS: true,
      });
      await expect(
        t.sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw }),
      ).rejects.toMatchObject({
        responseCode: 550,
      });
      t.close();
      const viaRelay = await relay.waitForRecord((x) => x.event === 'relay.message' && x.action === 'reject');
      const key = async (configFile: string, id: unknown) => {
        const r = await runSandgate(['quarantine', 'show', String(id), '--json', '--config', configFile]);
        expect(r.code).toBe(0);
        return (JSON.parse(r.stdout) as { item: { contentKey: string } }).item.contentKey;
      };
      const milterKey = await key(sites.rules!.configFile, viaMilter.quarantineId);
      const relayKey = await key(relayConfig, viaRelay.quarantineId);
      const original = await analyseMessage(
        new BufferMessage('x', { sender: '', recipients: [], frontEnd: 'test' }, Buffer.from(raw)),
      );
      expect(milterKey).toBe(original.contentKey);
      expect(relayKey).toBe(original.contentKey);
      // And the copies kept are the same bytes.
      const exported = async (configFile: string, id: unknown) =>
        (await runSandgate(['quarantine', 'export', String(id), '--config', configFile])).stdout;
      expect(await exported(sites.rules!.configFile, viaMilter.quarantineId)).toBe(
        await exported(relayConfig, viaRelay.quarantineId),
      );
    } finally {
      await relay.stop();
    }
  });
});
