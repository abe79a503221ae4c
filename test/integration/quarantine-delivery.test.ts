/**
 * Quarantine release goes through the relay's own delivery code, configured as the operator
 * configures it (quarantine.release.*, built by the composition root): the TLS policy of the
 * relay's next hop (a certificate is verified under `required`, unverified only under
 * `opportunistic`, and that is logged), AUTH from a password file, and every target kind the next
 * hop knows (smtp, directory, CommuniGate's Submitted directory).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isSandgateError } from '../../src/core/errors.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { makeTestCa, type TestCa } from '../support/test-ca.js';
import { tempDir } from '../support/tmp.js';
import { blockedMail, ENVELOPE, startHarness, type Harness } from './quarantine-harness.js';

let ca: TestCa;
beforeAll(() => {
  ca = makeTestCa();
});
afterAll(() => ca.remove());

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tlsSink(): Promise<{ sink: SmtpSink; users: string[] }> {
  const users: string[] = [];
  const sink = await startSmtpSink({
    disabledCommands: [],
    key: ca.key,
    cert: ca.cert,
    authMethods: ['PLAIN', 'LOGIN'],
    onAuth(auth, _session, cb) {
      users.push(String(auth.username));
      if (auth.username === 'release' && auth.password === 'pw-for-release') cb(null, { user: 'release' });
      else cb(Object.assign(new Error('5.7.8 bad credentials'), { responseCode: 535 }));
    },
  });
  cleanups.push(() => sink.close());
  return { sink, users };
}

async function harnessWith(release: Record<string, unknown>): Promise<{ harness: Harness; dir: string }> {
  const dir = tempDir();
  const harness = await startHarness(dir, { config: { quarantine: { release } } });
  cleanups.push(() => harness.close());
  return { harness, dir };
}

async function quarantined(h: Harness): Promise<string> {
  const ev = await h.evaluate(blockedMail());
  expect(ev.quarantineId).toBeDefined();
  return ev.quarantineId!;
}

describe('quarantine release through the delivery port', () => {
  it('tls: required verifies the certificate against caFile, with AUTH from a password file', async () => {
    const { sink, users } = await tlsSink();
    const dir = tempDir();
    writeFileSync(join(dir, 'release.pass'), 'pw-for-release\n', { mode: 0o600 });
    const { harness } = await harnessWith({
      target: `smtp://127.0.0.1:${sink.port}`,
      tls: 'required',
      caFile: ca.caFile,
      servername: 'sink.test.local',
      authUser: 'release',
      authPasswordFile: join(dir, 'release.pass'),
    });
    const id = await quarantined(harness);
    const result = await harness.service.release(id, { by: 'test' });
    expect(result.delivery.accepted).toEqual(ENVELOPE.recipients);
    const [got] = await sink.waitFor(1);
    expect(got).toMatchObject({ secure: true, user: 'release', sender: ENVELOPE.sender });
    expect(users).toEqual(['release']);
    expect(harness.logs.events('delivery.tls_unverified')).toEqual([]);
  });

  it('tls: required without the CA refuses an unverifiable certificate: nothing delivered, item kept', async () => {
    const { sink } = await tlsSink();
    const { harness } = await harnessWith({ target: `smtp://127.0.0.1:${sink.port}`, tls: 'required' });
    const id = await quarantined(harness);
    const err = await harness.service.release(id, { by: 'test' }).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_QUARANTINE_RELEASE')).toBe(true);
    expect(sink.messages).toEqual([]);
    expect((await harness.service.get(id)).releasedAt).toBeUndefined();
  });

  it('tls: opportunistic (the default) uses STARTTLS unverified, and says so when it is built', async () => {
    const { sink } = await tlsSink();
    const { harness } = await harnessWith({ target: `smtp://127.0.0.1:${sink.port}` });
    const id = await quarantined(harness);
    await harness.service.release(id, { by: 'test' });
    const [got] = await sink.waitFor(1);
    expect(got?.secure).toBe(true);
    expect(harness.logs.events('delivery.tls_unverified')).toMatchObject([
      { target: `smtp://127.0.0.1:${sink.port}`, key: 'quarantine.release' },
    ]);
  });

  it('directory: writes the released message with its envelope and a released mark', async () => {
    const out = join(tempDir(), 'released');
    const { harness: h } = await harnessWith({ target: `directory:${out}` });
    const id = await quarantined(h);
    const result = await h.service.release(id, { by: 'test' });
    expect(result.delivery.to).toBe(`directory:${out}`);
    const files = readdirSync(out);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/\.eml$/);
    const text = readFileSync(join(out, files[0]!), 'latin1');
    expect(
      text.startsWith(
        `Return-Path: <${ENVELOPE.sender}>\r\nX-Envelope-To: <rcpt@example.net>, <other@example.net>\r\n`,
      ),
    ).toBe(true);
    expect(text).toMatch(/^X-Sandgate-Mark: .*k=released/m);
  });

  it('submitted: an address that cannot be written as Envelope-To is refused; no file is left', async () => {
    const submitted = join(tempDir(), 'Submitted');
    mkdirSync(submitted);
    const { harness } = await harnessWith({ target: `submitted:${submitted}` });
    const id = await quarantined(harness);
    const err = await harness.service
      .release(id, { by: 'test', to: ['"odd name"@example.net'] })
      .catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_QUARANTINE_RELEASE')).toBe(true);
    expect(isSandgateError(err) && err.details.reason).toBe('ERR_DELIVERY_REFUSED');
    expect(readdirSync(submitted)).toEqual([]);
  });

  it('submitted: a directory that does not exist is not created (a wrong path must not swallow mail)', async () => {
    const missing = join(tempDir(), 'NoSuchSubmitted');
    const { harness } = await harnessWith({ target: `submitted:${missing}` });
    const id = await quarantined(harness);
    const err = await harness.service.release(id, { by: 'test' }).catch((e: unknown) => e);
    expect(isSandgateError(err) && err.details.reason).toBe('ERR_NEXT_HOP_UNAVAILABLE');
  });
});
