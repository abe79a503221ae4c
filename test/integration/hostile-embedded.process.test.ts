/**
 * The adversarial run's first finding, as a user meets it in each front end: a program or EICAR
 * uuencoded in a plain-text body was delivered as clean. Now `sandgate scan` (a real process)
 * says malicious, the relay (a real process, inline and queue mode) refuses or quarantines it and
 * hands nothing on, and the CommuniGate helper (a real child process) discards it with a
 * quarantine copy and an empty stderr.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import { CgpBase, CgpHelper } from '../support/cgp.js';
import { runSandgate } from '../support/cli.js';
import { embeddedSpecimens } from '../support/embedded-specimens.js';
import { startRelayProcess } from '../support/relay-process.js';
import { CLEAN_MAIL } from '../support/runtime.js';
import { tempDir } from '../support/tmp.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const HOSTILE = {
  program: embeddedSpecimens.uuencodedProgram,
  disguised: embeddedSpecimens.uuencodedDisguisedProgram,
  eicar: embeddedSpecimens.uuencodedEicar,
} as const;
const THREAT = {
  program: 'Sandgate.Attachment.BlockedExtension',
  disguised: 'Sandgate.Attachment.DisguisedExecutable',
  eicar: 'Sandgate.Test.EICAR',
} as const;
const NAMES = Object.keys(HOSTILE) as Array<keyof typeof HOSTILE>;

/** Sends like an MTA; resolves with the final reply's code. */
async function send(port: number, raw: Buffer): Promise<number> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    const info = await t.sendMail({ envelope: { from: 'a@example.test', to: ['b@example.test'] }, raw });
    return Number(/^(\d{3})/.exec(info.response)?.[1]);
  } catch (err) {
    return (err as { responseCode?: number }).responseCode ?? 0;
  } finally {
    t.close();
  }
}

describe('a file uuencoded in a text body is never clean', () => {
  it.each(NAMES)('sandgate scan: %s exits 1 and names the threat and the decoded block', async (name) => {
    const dir = tempDir();
    writeFileSync(join(dir, 'm.eml'), HOSTILE[name]());
    const r = await runSandgate(['scan', '--json', 'm.eml'], {
      cwd: dir,
      env: { SANDGATE_STATE_DIR: join(dir, 'state') },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    const json = JSON.parse(r.stdout) as {
      decision: { verdict: string; threats: string[] };
      outcomes: Array<{ details?: { part?: string } }>;
    };
    expect(json.decision.verdict).toBe('malicious');
    expect(json.decision.threats).toEqual([THREAT[name]]);
    expect(json.outcomes[0]?.details?.part).toBe('1/uuencode-1');
  });

  it.each(['inline', 'queue'] as const)(
    'sandgate relay (%s mode): refused or quarantined, nothing handed on',
    async (mode) => {
      const dir = tempDir();
      const sink = await startSmtpSink();
      cleanups.push(() => sink.close());
      const configFile = join(dir, 'sandgate.yaml');
      writeFileSync(
        configFile,
        JSON.stringify({
          stateDir: join(dir, 'state'),
          relay: {
            listen: '127.0.0.1:0',
            nextHop: `smtp://127.0.0.1:${sink.port}`,
            mode,
            ...(mode === 'queue' ? { queue: { retryMin: '1s' } } : {}),
          },
        }),
      );
      const relay = await startRelayProcess(configFile);
      cleanups.push(() => relay.stop());

      for (const name of NAMES) {
        const code = await send(relay.relayPort, HOSTILE[name]());
        // Inline: refused in the client's session. Queue: accepted, then judged by the worker.
        expect(code, name).toBe(mode === 'inline' ? 550 : 250);
      }
      // A clean message after them is delivered: the relay is working, the hostile ones were held.
      expect(await send(relay.relayPort, Buffer.from(CLEAN_MAIL))).toBe(250);
      const [delivered] = await sink.waitFor(1);
      expect(delivered?.bytes.toString('latin1')).toMatch(/^X-Sandgate-Verdict: clean/m);

      // Queue mode judges after the 250: poll the operator's view until every item is there.
      const waitQuarantined = async () => {
        let last = '';
        for (const end = Date.now() + 20_000; Date.now() < end;) {
          const r = await runSandgate(['quarantine', 'list', '--json', '--config', configFile]);
          last = r.stdout;
          const items = JSON.parse(r.stdout) as Array<{ threats: string[] }>;
          if (items.length >= NAMES.length) return items;
          await new Promise((res) => setTimeout(res, 100));
        }
        throw new Error(`the quarantine did not fill: ${last}`);
      };
      const items = await waitQuarantined();
      expect(items.flatMap((i) => i.threats).sort()).toEqual(NAMES.map((n) => THREAT[n]).sort());
      expect(sink.messages).toHaveLength(1);
    },
  );

  it('sandgate helper: DISCARD with a quarantine copy for each, ADDHEADER for clean mail, stderr empty', async () => {
    const base = new CgpBase();
    cleanups.push(() => base.remove());
    const stateDir = join(base.dir, 'state');
    const helper = CgpHelper.start({
      base,
      config: { stateDir, log: { file: join(base.dir, 'helper.log') } },
    });
    cleanups.push(() => helper.kill());
    let seq = 1;
    for (const name of NAMES) {
      const path = base.queueFile(`Queue/${name}.msg`, { body: HOSTILE[name]() });
      expect(await helper.request(String(seq++), `FILE ${path}`), name).toMatch(/^\d+ DISCARD$/);
    }
    const clean = base.queueFile('Queue/clean.msg', { body: CLEAN_MAIL });
    expect(await helper.request(String(seq), `FILE ${clean}`)).toMatch(
      /ADDHEADER ".*X-Sandgate-Verdict: clean/,
    );
    const { exit } = await helper.quit();
    expect(exit.code).toBe(0);
    expect(helper.stderr).toBe('');
    const r = await runSandgate(['quarantine', 'list', '--json'], { env: { SANDGATE_STATE_DIR: stateDir } });
    const items = JSON.parse(r.stdout) as Array<{ threats: string[] }>;
    expect(items.flatMap((i) => i.threats).sort()).toEqual(NAMES.map((n) => THREAT[n]).sort());
  });
});
