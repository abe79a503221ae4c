/**
 * `sandgate milter` on a unix socket behind a real Postfix whose smtpd runs chrooted in the queue
 * directory, as Debian's master.cf runs it (docs/milter.md, "A unix socket"): the socket lives
 * below the queue directory, owned by group postfix with mode 0660, and main.cf names it by the
 * path the chrooted smtpd sees. A socket outside the chroot is never reached: Postfix applies its
 * default action (tempfail).
 */
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { startMilterProcess, type MilterProcess } from '../support/milter-process.js';
import { postfixAvailable, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { EICAR } from '../support/relay.js';

/** As the chrooted smtpd sees it (main.cf), below the queue directory. */
const IN_CHROOT = '/sandgate/milter.sock';

describe.runIf(postfixAvailable())('sandgate milter on a unix socket behind a chrooted Postfix smtpd', () => {
  let sink: SmtpSink;
  let postfix: PostfixInstance;
  let milter: MilterProcess;
  let root: string;
  /** An absolute path outside the chroot, where a listener waits that smtpd can never reach. */
  let outside: string;
  let outsideServer: net.Server;
  let outsideConnections = 0;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sg-milter-chroot-'));
    outside = join(root, 'outside.sock');
    outsideServer = net.createServer((s) => {
      outsideConnections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => outsideServer.listen(outside, resolve));
    sink = await startSmtpSink();
    postfix = await startPostfix({ chrootedMilterSockets: [IN_CHROOT, outside], relayhostPort: sink.port });
    // install -d -o sandgate -g postfix -m 0750 /var/spool/postfix/sandgate (the milter runs as root here).
    const dir = join(postfix.queueDirectory, 'sandgate');
    mkdirSync(dir, { mode: 0o750 });
    const postfixGid = Number(spawnSync('id', ['-g', 'postfix'], { encoding: 'utf8' }).stdout.trim());
    chownSync(dir, 0, postfixGid);
    const configFile = join(root, 'sandgate.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        stateDir: join(root, 'state'),
        scan: { chain: ['rules'] },
        milter: {
          listen: `unix:${join(postfix.queueDirectory, IN_CHROOT)}`,
          socketMode: '0660',
          socketOwner: ':postfix',
        },
      }),
    );
    milter = await startMilterProcess(configFile);
  });

  afterAll(async () => {
    await milter?.stop();
    await postfix?.stop();
    await sink?.close();
    await new Promise<void>((resolve) => (outsideServer ? outsideServer.close(() => resolve()) : resolve()));
    rmSync(root, { recursive: true, force: true });
  });

  async function send(socketPath: string, raw: string): Promise<{ code: number; text: string }> {
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: postfix.inPortForMilterSocket(socketPath),
      secure: false,
      ignoreTLS: true,
      name: 'client.test.local',
    });
    try {
      const info = await t.sendMail({ envelope: { from: 'a@test.local', to: ['b@example.test'] }, raw });
      return { code: Number(info.response.slice(0, 3)), text: info.response };
    } catch (err) {
      const e = err as { responseCode?: number; response?: string };
      return { code: e.responseCode ?? 0, text: e.response ?? String(err) };
    } finally {
      t.close();
    }
  }

  const mail = (id: string, body: string) =>
    `From: a@test.local\r\nTo: b@example.test\r\nSubject: chroot ${id}\r\nMessage-ID: <${id}@test.local>\r\n\r\n${body}`;

  it('scans mail through the socket below the queue directory: clean delivered with the header, EICAR 550', async () => {
    expect((await send(IN_CHROOT, mail('chroot-clean', 'hello\r\n'))).code).toBe(250);
    for (;;) {
      const hit = sink.messages.find((m) => m.bytes.includes('chroot-clean@test.local'));
      if (hit) {
        expect(hit.bytes.toString('latin1')).toMatch(/^X-Sandgate-Verdict: clean; reason=clean;/);
        break;
      }
      await sink.waitFor(sink.messages.length + 1);
    }
    const refused = await send(IN_CHROOT, mail('chroot-eicar', `${EICAR}\r\n`));
    expect(refused.code).toBe(550);
    expect(refused.text).toMatch(/^550 5\.7\.1 /);
    await milter.waitForRecord((r) => r.event === 'milter.message' && r.action === 'reject');
    expect(milter.records.filter((r) => r.event === 'milter.message').map((r) => [r.action, r.code])).toEqual(
      [
        ['deliver', 250],
        ['reject', 550],
      ],
    );
  });

  it('a socket named by its path outside the chroot is never reached: 451 from Postfix', async () => {
    const r = await send(outside, mail('chroot-outside', 'hello\r\n'));
    expect(r.code).toBe(451);
    expect(r.text).toMatch(/^451 4\.7\.1 /);
    await postfix.waitForLog(/connect to Milter service unix:\S*outside\.sock: No such file or directory/);
    expect(outsideConnections).toBe(0);
  });
});
