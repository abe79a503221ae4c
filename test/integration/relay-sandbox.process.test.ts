/**
 * The built `sandgate relay` process with the PT Sandbox scanner (fake appliance) in front of an SMTP
 * sink: an analysis longer than relay.deadline is answered 451 (the client keeps the message), the
 * analysis goes on in the background, and the client's retry is answered from the cache: 250 and
 * handed on once for CLEAN, 550 5.7.1 and not handed on for DANGEROUS, one sandbox task each.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import {
  defaultVerdict,
  FAKE_PT_TOKEN,
  startFakePtSandbox,
  type FakePtSandbox,
} from '../fakes/fake-pt-sandbox.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { tempDir } from '../support/tmp.js';

const TASK_MS = 1_500;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startRelay(dir: string, sandbox: FakePtSandbox, sink: SmtpSink): Promise<RelayProcess> {
  const tokenFile = join(dir, 'pt.token');
  writeFileSync(tokenFile, FAKE_PT_TOKEN);
  const configFile = join(dir, 'sandgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      stateDir: join(dir, 'state'),
      scan: { chain: ['rules', 'pt-sandbox'] },
      scanners: {
        ptSandbox: {
          url: sandbox.url,
          tokenFile,
          polling: { firstDelay: '100ms', interval: '100ms' },
          maxTaskAge: '30s',
        },
      },
      relay: { listen: '127.0.0.1:0', nextHop: `smtp://127.0.0.1:${sink.port}`, deadline: '500ms' },
    }),
  );
  const relay = await startRelayProcess(configFile);
  cleanups.push(() => relay.stop());
  return relay;
}

/** Sends like an MTA: resolves with the SMTP code of the final reply. */
async function send(port: number, raw: string): Promise<number> {
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

/** Retries like an MTA until the answer is no longer 451 (bounded: the analysis takes TASK_MS). */
async function sendUntilFinal(port: number, raw: string): Promise<{ code: number; attempts: number }> {
  const giveUpAt = Date.now() + 20_000;
  for (let attempts = 1; ; attempts++) {
    const code = await send(port, `Received: from mta by relay; attempt ${attempts}\r\n${raw}`);
    if (code !== 451 || Date.now() > giveUpAt) return { code, attempts };
  }
}

describe('sandgate relay with PT Sandbox (real process, fake appliance)', () => {
  it('451 while the analysis runs, then the retry is answered from the cache with no second task', async () => {
    const dir = tempDir();
    const sandbox = await startFakePtSandbox({
      verdictFor: (bytes) => ({ ...defaultVerdict(bytes), durationMs: TASK_MS }),
    });
    cleanups.push(() => sandbox.close());
    const sink = await startSmtpSink();
    cleanups.push(() => sink.close());
    const relay = await startRelay(dir, sandbox, sink);
    const port = relay.relayPort;

    const clean =
      'From: a@example.test\r\nTo: b@example.test\r\nSubject: sandboxed\r\n\r\nplease analyse\r\n';
    expect(await send(port, clean)).toBe(451);
    const cleanFinal = await sendUntilFinal(port, clean);
    expect(cleanFinal.code).toBe(250);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.bytes.toString()).toMatch(
      /^X-Sandgate-Verdict: clean; reason=clean; scanners=rules:clean,pt-sandbox:clean; id=sg-/m,
    );

    const dangerous =
      'From: a@example.test\r\nTo: b@example.test\r\nSubject: bad\r\n\r\nX-Test-Verdict: DANGEROUS\r\n';
    expect(await send(port, dangerous)).toBe(451);
    expect((await sendUntilFinal(port, dangerous)).code).toBe(550);
    expect(sink.messages).toHaveLength(1);
    // One analysis per content, whatever the number of retries.
    expect(sandbox.tasksCreated()).toBe(2);

    // One info summary line per message, with the core's per-scanner outcomes in it.
    const refusal = await relay.waitForRecord((r) => r.event === 'relay.message' && r.code === 550);
    expect(refusal).toMatchObject({
      level: 30,
      action: 'reject',
      outcomes: ['rules:clean', 'pt-sandbox:malicious(Fake.Dangerous.Marker):cached@5.11.0.12345'],
    });
    expect(relay.records.filter((r) => r.event === 'message.verdict')).toEqual([]);
  });
});
