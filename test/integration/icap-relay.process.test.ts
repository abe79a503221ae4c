/**
 * The built `sandgate relay` process with `scan.chain: [icap]` against the fake ICAP server, in
 * front of an SMTP sink: the threat name the service reports reaches the 550 reply text, the
 * relay's summary line and the quarantine item (through the built `sandgate quarantine` CLI); the
 * service's ISTag is stored with the verdict (the outcome's `@version`, through the core's
 * ScannerVersions), and a new ISTag does not make the cached verdict be thrown away.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeIcap } from '../fakes/fake-icap.js';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import { runSandgate } from '../support/cli.js';
import { startRelayProcess } from '../support/relay-process.js';
import { tempDir } from '../support/tmp.js';
import { EICAR, eml } from '../unit/sandbox/clamd/helpers.js';

const THREAT = 'Win.Trojan.IcapRelay-7';
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Sends like an MTA: the final reply's code and text. */
async function send(port: number, raw: string): Promise<{ code: number; text: string }> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    const info = await t.sendMail({ envelope: { from: 'a@example.test', to: ['b@example.test'] }, raw });
    return { code: Number(/^(\d{3})/.exec(info.response)?.[1]), text: info.response };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string };
    return { code: e.responseCode ?? 0, text: e.response ?? String(err) };
  } finally {
    t.close();
  }
}

interface QuarantineShow {
  item: {
    id: string;
    verdict: string;
    threats: string[];
    outcomes: Array<{ scanner: string; kind: string; version?: string; details?: Record<string, unknown> }>;
  };
}

describe('sandgate relay with scan.chain [icap] (real process, fake ICAP service)', () => {
  it("the service's threat name in the 550 text and the quarantine item; its ISTag stored with the verdict and kept across a new ISTag", async () => {
    const dir = tempDir();
    const stateDir = join(dir, 'state');
    const icap = await FakeIcap.start({
      istag: 'DB-2026-12-04',
      behavior: { kind: 'scan', form: 'x-infection-found', threat: THREAT },
    });
    cleanups.push(() => icap.close());
    const sink = await startSmtpSink();
    cleanups.push(() => sink.close());
    const configFile = join(dir, 'sandgate.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        stateDir,
        scan: { chain: ['icap'] },
        scanners: { icap: { servers: [icap.url], timeout: '20s' } },
        relay: { listen: '127.0.0.1:0', nextHop: `smtp://127.0.0.1:${sink.port}`, deadline: '30s' },
      }),
    );
    const relay = await startRelayProcess(configFile);
    cleanups.push(() => relay.stop());

    // A clean message passes, judged by the ICAP service.
    expect((await send(relay.relayPort, eml('quarterly numbers'))).code).toBe(250);
    const [delivered] = await sink.waitFor(1);
    expect(delivered!.bytes.toString('latin1')).toMatch(
      /^X-Sandgate-Verdict: clean; reason=clean; scanners=icap:clean; id=sg-/m,
    );

    // The infected one: refused with the service's threat name in the reply text.
    // In the text itself: the fake looks for the EICAR string in the bytes it gets (it decodes nothing).
    const infected = eml(`see below\r\n${EICAR}`);
    const refused = await send(relay.relayPort, infected);
    expect(refused.code).toBe(550);
    expect(refused.text).toContain(THREAT);
    expect(sink.messages).toHaveLength(1);
    const summary = await relay.waitForRecord((r) => r.event === 'relay.message' && r.code === 550);
    expect(summary).toMatchObject({
      action: 'reject',
      outcomes: [`icap:malicious(${THREAT})@DB-2026-12-04`],
    });

    // The quarantine item, as an operator sees it with the built CLI.
    const env = { SANDGATE_STATE_DIR: stateDir };
    const list = await runSandgate(['quarantine', 'list', '--json'], { cwd: dir, env });
    expect(list.stderr).toBe('');
    const items = JSON.parse(list.stdout) as Array<{ id: string; threats: string[] }>;
    expect(items).toHaveLength(1);
    expect(items[0]!.threats).toEqual([THREAT]);
    const show = await runSandgate(['quarantine', 'show', items[0]!.id, '--json'], { cwd: dir, env });
    expect(show.stderr).toBe('');
    const shown = JSON.parse(show.stdout) as QuarantineShow;
    expect(shown.item).toMatchObject({ verdict: 'malicious', threats: [THREAT] });
    expect(shown.item.outcomes).toEqual([
      expect.objectContaining({
        scanner: 'icap',
        kind: 'malicious',
        threats: [THREAT],
        version: 'DB-2026-12-04',
        details: expect.objectContaining({ istag: 'DB-2026-12-04', server: icap.url }) as unknown,
      }),
    ]);

    // New signatures at the service: the next answer carries a new ISTag. The content judged
    // before is not sent again; its cached verdict names the ISTag that reached it.
    icap.istag = 'DB-2026-12-05';
    expect((await send(relay.relayPort, eml('another message'))).code).toBe(250);
    await sink.waitFor(2);
    const sent = icap.counts.RESPMOD;
    const again = await send(relay.relayPort, `Received: from mta by relay; retry\r\n${infected}`);
    expect(again.code).toBe(550);
    expect(again.text).toContain(THREAT);
    expect(icap.counts.RESPMOD).toBe(sent);
    const cached = await relay.waitForRecord(
      (r) => r.event === 'relay.message' && r.code === 550 && r !== summary,
    );
    expect(cached).toMatchObject({ outcomes: [`icap:malicious(${THREAT}):cached@DB-2026-12-04`] });
  });
});
