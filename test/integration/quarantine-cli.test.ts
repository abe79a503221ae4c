import { afterEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { tempDir } from '../support/tmp.js';
import {
  ATTACHMENT_NAME,
  BODY_LINES,
  cyrillicMail,
  FROM_ADDRESS,
  FROM_NAME,
  SUBJECT,
} from '../support/cyrillic-mail.js';
import { blockedMail, ENVELOPE, memoryIo, startHarness, type Harness } from './quarantine-harness.js';

let harness: Harness | undefined;
let sink: SmtpSink | undefined;
afterEach(async () => {
  await harness?.close();
  await sink?.close();
  harness = sink = undefined;
});

async function cli(dir: string, args: string[], sets: string[] = []) {
  const mem = memoryIo(dir);
  mem.io.env.USER = 'operator';
  const code = await main(
    [
      'quarantine',
      ...args,
      '--set',
      `stateDir=${dir}`,
      '--set',
      'log.level=silent',
      ...sets.flatMap((s) => ['--set', s]),
    ],
    mem.io,
  );
  return { code, stdout: mem.stdout(), stderr: mem.stderr() };
}

describe('sandgate quarantine', () => {
  it('list, show, export, release --allow-hash and delete', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir);
    const original = blockedMail();
    const id = (await harness.evaluate(original)).quarantineId!;
    const target = [`quarantine.release.target=127.0.0.1:${sink.port}`];

    const list = await cli(dir, [
      'list',
      '--json',
      '--verdict',
      'malicious',
      '--since',
      '1h',
      '--rcpt',
      'rcpt@',
    ]);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout.toString()) as Array<{ id: string }>).map((i) => i.id)).toEqual([id]);
    expect(JSON.parse((await cli(dir, ['list', '--json', '--sender', 'nobody'])).stdout.toString())).toEqual(
      [],
    );
    const table = await cli(dir, ['list']);
    expect(table.stdout.toString()).toMatch(new RegExp(`^ID .*\\n${id} .*malicious`, 's'));

    const show = await cli(dir, ['show', id]);
    expect(show.code).toBe(0);
    expect(show.stdout.toString()).toMatch(
      /tool\.exe\s+application\/octet-stream\s+\d+ B\s+sha256=[0-9a-f]{64}\s+\[blocking\]/,
    );
    expect(show.stdout.toString()).toContain(`sender:      <${ENVELOPE.sender}>`);

    const exported = await cli(dir, ['export', id]);
    expect(exported.code).toBe(0);
    expect(exported.stdout.equals(original)).toBe(true);

    const released = await cli(dir, ['release', id, '--allow-hash'], target);
    expect(released.stderr).toBe('');
    expect(released.code).toBe(0);
    expect(released.stdout.toString()).toMatch(/^released .* allowed [0-9a-f]{64}/);
    await sink.waitFor(1);
    expect((await harness.service.get(id)).releasedBy).toBe('cli:operator');
    expect(await harness.allowList.list()).toHaveLength(1);

    const deleted = await cli(dir, ['delete', id]);
    expect(deleted.code).toBe(0);
    expect(await harness.service.list()).toEqual([]);
  });

  it('unknown ids exit 2 with ERR_QUARANTINE_NOT_FOUND', async () => {
    const dir = tempDir();
    for (const sub of ['show', 'export', 'release', 'delete']) {
      const r = await cli(dir, [sub, 'does-not-exist'], ['quarantine.release.target=127.0.0.1:1']);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/no quarantine item "does-not-exist" \[ERR_QUARANTINE_NOT_FOUND\]/);
    }
  });

  it('a failed release exits 2 with ERR_QUARANTINE_RELEASE and keeps the item', async () => {
    sink = await startSmtpSink();
    sink.behaviour.refuseMail = [550, '5.7.1 go away'];
    const dir = tempDir();
    harness = await startHarness(dir);
    const id = (await harness.evaluate(blockedMail())).quarantineId!;
    const r = await cli(dir, ['release', id], [`quarantine.release.target=127.0.0.1:${sink.port}`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('[ERR_QUARANTINE_RELEASE]');
    expect(r.stderr).toContain('go away');
    expect((await harness.service.get(id)).releasedAt).toBeUndefined();
  });

  it('usage errors exit 2', async () => {
    const dir = tempDir();
    expect((await cli(dir, ['frobnicate'])).code).toBe(2);
    expect((await cli(dir, ['show'])).code).toBe(2);
    expect((await cli(dir, ['list', '--since', 'yesterday-ish'])).stderr).toContain('[ERR_BAD_REQUEST]');
  });
});

describe('sandgate quarantine with Russian mail', () => {
  it('list, show and --json decode koi8-r and windows-1251 headers; --subject finds them; nothing unprintable is printed', async () => {
    const dir = tempDir();
    harness = await startHarness(dir);
    const mail = cyrillicMail({
      attachment: Buffer.from('harmless tool\n'),
      bodyExtra: 'строка с \u001b[31mцветом\u001b[0m и \u001b]0;title\u0007заголовком',
    });
    // The attachment name ends in .com: the rules engine blocks it, so the message is quarantined.
    const id = (await harness.evaluate(mail)).quarantineId!;
    expect(id).toBeDefined();

    const table = await cli(dir, ['list']);
    expect(table.code).toBe(0);
    const text = table.stdout.toString('utf8');
    expect(text).toContain(SUBJECT);
    expect(text).not.toContain('=?koi8-r?');
    // The time says its zone: an offset from UTC after the seconds.
    expect(text).toMatch(
      new RegExp(`${id}\\s+\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} [+-]\\d{2}:\\d{2}\\s`),
    );

    const found = await cli(dir, ['list', '--json', '--subject', 'СЧЕТ НА оплату']);
    const items = JSON.parse(found.stdout.toString()) as Array<{
      id: string;
      subject: string;
      subjectRaw: string;
    }>;
    expect(items.map((i) => [i.id, i.subject])).toEqual([[id, SUBJECT]]);
    expect(items[0]!.subjectRaw).toMatch(/^=\?koi8-r\?B\?/);
    expect(
      JSON.parse((await cli(dir, ['list', '--json', '--subject', 'накладная'])).stdout.toString()),
    ).toEqual([]);

    const show = await cli(dir, ['show', id]);
    const out = show.stdout.toString('utf8');
    expect(show.code).toBe(0);
    expect(out).toContain(`from:        ${FROM_NAME} <${FROM_ADDRESS}>`);
    expect(out).toContain(`subject:     ${SUBJECT}`);
    expect(out).toContain(`  Subject: ${SUBJECT}`);
    expect(out).toContain(ATTACHMENT_NAME);
    for (const line of BODY_LINES) expect(out).toContain(`  | ${line}`);
    expect(out).toContain('  | строка с цветом и заголовком');
    // No escape sequence or other control character reaches the terminal.
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);

    const json = JSON.parse((await cli(dir, ['show', id, '--json'])).stdout.toString()) as {
      headers: Array<{ name: string; value: string; raw: string }>;
      preview: { text: string };
    };
    expect(json.headers.find((h) => h.name === 'From')?.value).toBe(`${FROM_NAME} <${FROM_ADDRESS}>`);
    expect(json.preview.text.split('\n')[0]).toBe(BODY_LINES[0]);
  });
});
