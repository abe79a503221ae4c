import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isSandgateError } from '../../src/core/errors.js';
import { buildDelivery } from '../../src/cli/compose/delivery.js';
import { NotifyingQuarantine } from '../../src/quarantine/notify.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { tempDir } from '../support/tmp.js';
import { blockedMail, ENVELOPE, startHarness, type Harness } from './quarantine-harness.js';

let harness: Harness | undefined;
let sink: SmtpSink | undefined;
afterEach(async () => {
  await harness?.close();
  await sink?.close();
  harness = undefined;
  sink = undefined;
});

async function blockedItem(h: Harness, mail = blockedMail()): Promise<string> {
  const ev = await h.evaluate(mail);
  expect(ev.decision.verdict).toBe('malicious');
  expect(ev.quarantineId).toBeDefined();
  return ev.quarantineId!;
}

function markOf(bytes: Buffer): string | undefined {
  return /^X-Sandgate-Mark: (.*)\r?$/m.exec(bytes.toString('latin1'))?.[1];
}

describe('quarantine release over SMTP', () => {
  it('blocked -> listed -> shown -> released -> arrives once -> not scanned again', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir, {
      config: { quarantine: { release: { target: `127.0.0.1:${sink.port}` } } },
    });
    const h = harness;
    const original = blockedMail({ received: true });
    const id = await blockedItem(h, original);
    expect(h.rules.calls).toBe(1);

    const listed = await h.service.list({
      verdict: 'malicious',
      sender: 'SENDER@example',
      recipient: 'other@',
    });
    expect(listed.map((i) => i.id)).toEqual([id]);
    expect(await h.service.list({ recipient: 'nobody@' })).toEqual([]);

    const shown = await h.service.show(id);
    expect(shown.item.envelope).toMatchObject({ sender: ENVELOPE.sender, recipients: ENVELOPE.recipients });
    expect(shown.headers.find((x) => x.name === 'Subject')?.value).toBe('the tool you asked for');
    const exe = shown.attachments.find((a) => a.filename === 'tool.exe');
    expect(exe).toMatchObject({ blocking: true, contentType: 'application/octet-stream' });
    expect(exe?.sha256).toMatch(/^[0-9a-f]{64}$/);

    const result = await h.service.release(id, { by: 'cli:ops' });
    expect(result.delivery.accepted).toEqual(ENVELOPE.recipients);
    const [arrived] = await sink.waitFor(1);
    expect(sink.messages).toHaveLength(1);
    expect(arrived!.sender).toBe(ENVELOPE.sender);
    expect(arrived!.recipients).toEqual(ENVELOPE.recipients);
    const mark = markOf(arrived!.bytes);
    expect(mark).toMatch(/k=released/);
    // The original bytes follow, unchanged apart from the mark.
    expect(arrived!.bytes.toString('latin1').replace(/X-Sandgate-Mark: .*\r\n/, '')).toBe(
      original.toString('latin1'),
    );

    const item = await h.service.get(id);
    expect(item.releasedBy).toBe('cli:ops');
    expect(item.releasedAt).toBeGreaterThan(0);
    expect(item.releasedTo).toContain(`127.0.0.1:${sink.port}`);

    // The next hop prepends its own Received field; the core recognises the mark and does not scan.
    const again = await h.evaluate(
      Buffer.concat([
        Buffer.from('Received: from sandgate by next.hop; Tue, 2 Jan 2024 10:05:00 +0000\r\n'),
        arrived!.bytes,
      ]),
    );
    expect(again.alreadyJudged).toBe(true);
    expect(again.decision).toMatchObject({ action: 'deliver', reason: 'released' });
    expect(again.stripHeaders).toContain('X-Sandgate-Mark');
    expect(h.rules.calls).toBe(1);
    expect(sink.messages).toHaveLength(1);
  });

  it('a forged, copied or expired mark does not pass', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir, {
      config: { quarantine: { release: { target: `127.0.0.1:${sink.port}` } } },
    });
    const id = await blockedItem(harness);
    await harness.service.release(id, { by: 'test' });
    const [arrived] = await sink.waitFor(1);
    const text = arrived!.bytes.toString('latin1');
    const mark = markOf(arrived!.bytes)!;

    const forged = text.replace(/mac=[\w-]+/, `mac=${'A'.repeat(43)}`);
    const ev1 = await harness.evaluate(Buffer.from(forged, 'latin1'));
    expect(ev1.alreadyJudged).toBe(false);
    expect(ev1.decision.verdict).toBe('malicious');
    // Same content as the blocked original: judged again, from the verdict cache.
    expect(ev1.outcomes[0]).toMatchObject({ kind: 'malicious', cached: true });

    // The same valid mark replayed onto other content (another attachment).
    const other = blockedMail({ tool: 'something else entirely\n' }).toString('latin1');
    const replayed = `X-Sandgate-Mark: ${mark}\r\n${other}`;
    const ev2 = await harness.evaluate(Buffer.from(replayed, 'latin1'));
    expect(ev2.alreadyJudged).toBe(false);
    expect(ev2.decision.verdict).toBe('malicious');
    expect(harness.rules.calls).toBe(2);
    expect(harness.logs.events('mark.invalid').map((r) => r.reason)).toEqual(['mac', 'mac']);
    await harness.close();

    // Replayed after the mark's maximum age: expired.
    const later = Date.now() + 31 * 24 * 3600 * 1000;
    harness = await startHarness(dir, { now: () => later });
    const ev3 = await harness.evaluate(arrived!.bytes);
    expect(ev3.alreadyJudged).toBe(false);
    expect(harness.logs.events('mark.invalid').map((r) => r.reason)).toEqual(['expired']);
  });

  it('--allow-hash: the same attachment in a new message passes, another one is still blocked', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir, {
      config: { quarantine: { release: { target: `127.0.0.1:${sink.port}` } } },
    });
    const id = await blockedItem(harness);
    const result = await harness.service.release(id, { by: 'test', allowHash: true });
    expect(result.allowed).toHaveLength(1);
    expect(await harness.allowList.list()).toEqual([
      expect.objectContaining({ sha256: result.allowed[0], addedBy: 'test', quarantineId: id }),
    ]);
    const fresh = await harness.evaluate(blockedMail({ subject: 'same tool, new mail' }));
    expect(fresh.alreadyJudged).toBe(false);
    expect(fresh.decision).toMatchObject({ action: 'deliver', verdict: 'clean' });
    const different = await harness.evaluate(blockedMail({ subject: 'other', tool: 'another binary\n' }));
    expect(different.decision.verdict).toBe('malicious');
  });

  it('a failed release leaves the item in place and says why', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir, {
      config: { quarantine: { release: { target: `127.0.0.1:${sink.port}` } } },
    });
    const id = await blockedItem(harness);
    sink.behaviour.refuseData = [554, '5.7.1 no thanks'];
    const err = await harness.service.release(id, { by: 'test', allowHash: true }).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_QUARANTINE_RELEASE')).toBe(true);
    expect((err as Error).message).toContain('no thanks');
    expect((await harness.service.get(id)).releasedAt).toBeUndefined();
    expect(await harness.allowList.list()).toEqual([]);
    expect(sink.messages).toHaveLength(0);

    // Nothing listens: refused connection, item still there.
    await sink.close();
    const down = await harness.service.release(id, { by: 'test' }).catch((e: unknown) => e);
    expect(isSandgateError(down, 'ERR_QUARANTINE_RELEASE')).toBe(true);
    expect((await harness.service.list()).map((i) => i.id)).toEqual([id]);
    sink = undefined;

    const missing = await harness.service.release('nope', { by: 'test' }).catch((e: unknown) => e);
    expect(isSandgateError(missing, 'ERR_QUARANTINE_NOT_FOUND')).toBe(true);
  });

  it('refuses to release without a configured target', async () => {
    harness = await startHarness(tempDir());
    const id = await blockedItem(harness);
    const err = await harness.service.release(id, { by: 'test' }).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_QUARANTINE_RELEASE')).toBe(true);
  });

  it('--to delivers to another address with the original sender', async () => {
    sink = await startSmtpSink();
    harness = await startHarness(tempDir(), {
      config: { quarantine: { release: { target: `127.0.0.1:${sink.port}` } } },
    });
    const id = await blockedItem(harness);
    await harness.service.release(id, { by: 'test', to: ['admin@example.net'] });
    const [m] = await sink.waitFor(1);
    expect(m!.recipients).toEqual(['admin@example.net']);
    expect(m!.sender).toBe(ENVELOPE.sender);
  });
});

describe('quarantine release to the CommuniGate Submitted directory', () => {
  it('writes a .sub file CommuniGate accepts, and the resubmitted message is not scanned again', async () => {
    const dir = tempDir();
    const submitted = join(dir, 'Submitted');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(submitted);
    harness = await startHarness(dir, {
      config: { quarantine: { release: { target: `submitted:${submitted}` } } },
    });
    const id = await blockedItem(harness, blockedMail({ received: true }));
    const result = await harness.service.release(id, { by: 'test' });
    const files = readdirSync(submitted);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/\.sub$/);
    expect(result.delivery.to).toBe(`submitted:${submitted}`);
    expect(result.delivery.response).toContain(files[0]!);
    const text = readFileSync(join(submitted, files[0]!), 'latin1');
    expect(text).not.toContain('\r');
    expect(text.split('\n').slice(0, 4)).toEqual([
      `Return-Path: <${ENVELOPE.sender}>`,
      `Envelope-To: ${ENVELOPE.recipients[0]}`,
      `Envelope-To: ${ENVELOPE.recipients[1]}`,
      'Received: from mx.example.org (mx.example.org [192.0.2.10])',
    ]);
    // What CommuniGate does with it: Envelope-To fields removed, its own Received prepended.
    const resubmitted =
      'Received: from [127.0.0.1] by cgp.example.net (CommuniGate Pro PIPE)\n' +
      text
        .split('\n')
        .filter((l) => !l.startsWith('Envelope-To:'))
        .join('\n');
    const ev = await harness.evaluate(Buffer.from(resubmitted, 'latin1'));
    expect(ev.alreadyJudged).toBe(true);
    expect(harness.rules.calls).toBe(1);
  });
});

describe('administrator notice', () => {
  it('sends a notice to the administrator (null sender, never to the sender) after the copy is kept', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir);
    const notifier = new NotifyingQuarantine(
      harness.runtime.quarantine,
      { to: ['postmaster@example.net'], from: 'sandgate@example.net' },
      buildDelivery(
        { kind: 'smtp', host: '127.0.0.1', port: sink.port },
        { tls: 'opportunistic', timeout: 5000 },
        { hostname: 'gw.test', key: 'quarantine.notify', log: harness.runtime.log },
      ),
      harness.runtime.log,
    );
    const ev = await harness.evaluate(blockedMail());
    const { BufferMessage } = await import('../../src/mime/spool.js');
    const id = await notifier.put({
      message: new BufferMessage('notify1', ENVELOPE, blockedMail()),
      contentKey: ev.contentKey,
      decision: ev.decision,
      outcomes: ev.outcomes,
    });
    await notifier.settle();
    const [notice] = await sink.waitFor(1);
    expect(notice!.sender).toBe('');
    expect(notice!.recipients).toEqual(['postmaster@example.net']);
    expect(notice!.bytes.toString('latin1')).toContain(`Id:         ${id}`);
    expect((await harness.service.get(id)).id).toBe(id);
  });
});
