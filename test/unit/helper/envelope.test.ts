import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSandgateError } from '../../../src/core/errors.js';
import { FileMessage } from '../../../src/mime/spool.js';
import {
  findBodyOffset,
  parseEnvelope,
  QUEUE_FILE_FLAGS,
  readQueueFile,
  resolveQueuePath,
} from '../../../src/helper/envelope.js';

const BODY = 'From: a@x.test\nTo: b@y.test\nSubject: hi\n\nhello\n';

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

describe('findBodyOffset', () => {
  it('finds the first empty line with LF or CRLF', () => {
    expect(findBodyOffset(Buffer.from('P <a>\nR <b>\n\nX: 1\n\nbody'))).toBe(13);
    expect(findBodyOffset(Buffer.from('P <a>\r\nR <b>\r\n\r\nX: 1\r\n'))).toBe(16);
    expect(findBodyOffset(Buffer.from('\nX: 1\n'))).toBe(1);
    expect(findBodyOffset(Buffer.from('\r\nX: 1\n'))).toBe(2);
    expect(findBodyOffset(Buffer.from('P <a>\nR <b>\n'))).toBe(-1);
    expect(findBodyOffset(Buffer.from('P <a>\nR <b>\n\r'))).toBe(-1);
  });
});

describe('parseEnvelope', () => {
  it('reads the CGP 6.x single-recipient envelope', () => {
    const p = parseEnvelope(
      [
        'S <user1@test.test> SMTP [10.4.0.159]',
        'A testlab1.test [10.21.2.87]',
        'O L',
        'P I 26-04-2019 15:57:14 0000 ____ ____ <user1@test.test>',
        'R W 26-04-2019 15:57:14 0000 ____ _FY_ <user3@test.test>',
      ].join('\n'),
    );
    expect(p).toEqual({
      envelope: {
        sender: 'user1@test.test',
        recipients: ['user3@test.test'],
        frontEnd: 'helper',
        clientAddress: '10.4.0.159',
      },
      module: 'SMTP',
      authUser: 'user1@test.test',
      localDomain: 'testlab1.test',
    });
  });

  it('reads tags in any order, several recipients, CRLF, and ignores unknown tags', () => {
    const p = parseEnvelope(
      'R W 17-09-2001 09:52:33 0000 ____ _FY_ <nif@guga.ru>\r\nP I 17-09-2001 09:52:33 0000 ____ ____ <ann@domain.ru>\r\nO T\r\nZ something new\r\nS SMTP [199.199.199.199]\r\nR W 17-09-2001 09:52:33 0000 ____ _FY_ <naf@buki.ru>\r\n',
    );
    expect(p.envelope).toEqual({
      sender: 'ann@domain.ru',
      recipients: ['nif@guga.ru', 'naf@buki.ru'],
      frontEnd: 'helper',
      clientAddress: '199.199.199.199',
    });
    expect(p.module).toBe('SMTP');
    expect(p.authUser).toBeUndefined();
  });

  it('reads a DSN: null sender, no A line, no client address', () => {
    const p = parseEnvelope(
      'P I 01-01-2024 00:00:00 0000 ____ ____ <>\nS DSN [0.0.0.0]\nR W 01-01-2024 00:00:00 0000 ____ ____ <a@x.test>\n',
    );
    expect(p.envelope).toEqual({ sender: '', recipients: ['a@x.test'], frontEnd: 'helper' });
    expect(p.module).toBe('DSN');
    expect(p.localDomain).toBeUndefined();
  });

  it('refuses a block with an untagged line (a message without an envelope)', () => {
    let err: unknown;
    try {
      parseEnvelope('Received: from x\nFrom: a@x.test');
    } catch (e) {
      err = e;
    }
    expect(isSandgateError(err, 'ERR_MESSAGE_MALFORMED')).toBe(true);
  });
});

describe('resolveQueuePath', () => {
  it('resolves inside the base directory, with back-slashes as separators', () => {
    expect(resolveQueuePath('/var/CommuniGate', 'Queue/57/1.msg')).toBe('/var/CommuniGate/Queue/57/1.msg');
    expect(resolveQueuePath('/var/CommuniGate', 'Queue\\57\\1.msg')).toBe('/var/CommuniGate/Queue/57/1.msg');
    expect(resolveQueuePath('/var/CommuniGate', '/var/CommuniGate/Queue/1.msg')).toBe(
      '/var/CommuniGate/Queue/1.msg',
    );
    expect(resolveQueuePath('/var/CommuniGate', 'Queue/../Queue/..x.msg')).toBe(
      '/var/CommuniGate/Queue/..x.msg',
    );
  });

  it('refuses paths that leave it', () => {
    for (const p of [
      '../etc/passwd',
      'Queue/../../x.msg',
      '/etc/passwd',
      '..\\x.msg',
      '.',
      '/var/CommuniGateX/a.msg',
    ]) {
      let err: unknown;
      try {
        resolveQueuePath('/var/CommuniGate', p);
      } catch (e) {
        err = e;
      }
      expect(isSandgateError(err, 'ERR_INPUT_NOT_FOUND'), p).toBe(true);
      expect((err as { details: { reason: string } }).details.reason).toBe('outside-base');
    }
  });
});

describe('readQueueFile', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sg-envelope-'));
    mkdirSync(join(dir, 'Queue', '57'), { recursive: true });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('returns the envelope and the message bytes, leaving the file unchanged', async () => {
    const file = join(dir, 'Queue', '57', '1846258457.msg');
    const content = `P I 26-04-2019 15:57:14 0000 ____ ____ <a@x.test>\nR W 26-04-2019 15:57:14 0000 ____ _FY_ <b@y.test>\nS SMTP [10.0.0.1]\n\n${BODY}`;
    writeFileSync(file, content);
    const before = createHash('sha256').update(readFileSync(file)).digest('hex');
    const qf = await readQueueFile(file);
    expect(qf.envelope.recipients).toEqual(['b@y.test']);
    expect(qf.size).toBe(Buffer.byteLength(BODY));
    const msg = new FileMessage('sg-test', qf.envelope, file, qf.bodyOffset, qf.size);
    expect(await text(msg.open())).toBe(BODY);
    expect(await text(msg.open({ start: 6, end: 10 }))).toBe(BODY.slice(6, 10));
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(before);
  });

  it('finds an empty line that straddles two reads of a long envelope', async () => {
    const file = join(dir, 'Queue', 'many.msg');
    const rcpts = Array.from(
      { length: 3000 },
      (_, i) => `R W 01-01-2024 00:00:00 0000 ____ _FY_ <r${i}@y.test>`,
    );
    const content = `P I 01-01-2024 00:00:00 0000 ____ ____ <a@x.test>\r\n${rcpts.join('\r\n')}\r\n\r\n${BODY}`;
    writeFileSync(file, content);
    const qf = await readQueueFile(file);
    expect(qf.envelope.recipients).toHaveLength(3000);
    expect(qf.bodyOffset).toBe(Buffer.byteLength(content) - Buffer.byteLength(BODY));
    // Every split point of the envelope end across the 64 KiB seam gives the same offset.
    for (const pad of [0, 1, 2, 3]) {
      const head = `P <a@x.test>\n${'O ' + 'x'.repeat(65536 - 16 - pad)}\n`;
      writeFileSync(file, `${head}\r\n${BODY}`);
      const q = await readQueueFile(file);
      expect(q.bodyOffset, `pad ${pad}`).toBe(Buffer.byteLength(head) + 2);
    }
  });

  it('says why a file cannot be used', async () => {
    const cases: Array<[string, string | undefined, string, string]> = [
      ['missing.msg', undefined, 'ERR_INPUT_NOT_FOUND', 'missing'],
      ['noblank.msg', 'P <a@x.test>\nR <b@y.test>\n', 'ERR_MESSAGE_MALFORMED', 'no-empty-line'],
      ['eml.msg', BODY, 'ERR_MESSAGE_MALFORMED', 'untagged-line'],
      ['empty.msg', '', 'ERR_MESSAGE_MALFORMED', 'no-empty-line'],
    ];
    for (const [name, content, code, reason] of cases) {
      const file = join(dir, 'Queue', name);
      if (content !== undefined) writeFileSync(file, content);
      let err: unknown;
      try {
        await readQueueFile(file);
      } catch (e) {
        err = e;
      }
      expect(isSandgateError(err), name).toBe(true);
      expect((err as { code: string }).code, name).toBe(code);
      expect((err as { details: { reason: string } }).details.reason, name).toBe(reason);
    }
    let err: unknown;
    try {
      await readQueueFile(join(dir, 'Queue'));
    } catch (e) {
      err = e;
    }
    expect((err as { details: { reason: string } }).details.reason).toBe('not-a-file');
  });

  it('refuses a FIFO at once, without waiting for a writer, and a queue file that is a symbolic link', async () => {
    const fifo = join(dir, 'Queue', 'fifo.msg');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const started = Date.now();
    const err = await readQueueFile(fifo).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(isSandgateError(err, 'ERR_INPUT_NOT_FOUND')).toBe(true);
    expect((err as { details: { reason: string } }).details.reason).toBe('not-a-file');

    const target = join(dir, 'Queue', 'target.msg');
    writeFileSync(target, `P <a@x.test>\n\n${BODY}`);
    const link = join(dir, 'Queue', 'link.msg');
    symlinkSync(target, link);
    const linked = await readQueueFile(link).catch((e: unknown) => e);
    expect(isSandgateError(linked, 'ERR_INPUT_NOT_FOUND')).toBe(true);
    expect((linked as { details: { reason: string } }).details.reason).toBe('symlink');
    // The message is opened with the same flags: a file swapped for a link after the check is not followed.
    const qf = await readQueueFile(target);
    const msg = new FileMessage('sg-test', qf.envelope, link, qf.bodyOffset, qf.size, QUEUE_FILE_FLAGS);
    await expect(text(msg.open())).rejects.toMatchObject({ code: 'ELOOP' });
    expect(
      await text(
        new FileMessage('sg-test', qf.envelope, target, qf.bodyOffset, qf.size, QUEUE_FILE_FLAGS).open(),
      ),
    ).toBe(BODY);
  });

  it.skipIf(process.getuid?.() === 0)('reports an unreadable file', async () => {
    const file = join(dir, 'Queue', 'locked.msg');
    writeFileSync(file, `P <a@x.test>\n\n${BODY}`);
    chmodSync(file, 0o000);
    let err: unknown;
    try {
      await readQueueFile(file);
    } catch (e) {
      err = e;
    }
    expect((err as { details: { reason: string } }).details.reason).toBe('unreadable');
  });

  it('refuses an envelope longer than the limit', async () => {
    const file = join(dir, 'Queue', 'huge.msg');
    writeFileSync(file, `P <a@x.test>\n${'R <b@y.test>\n'.repeat(100)}\n${BODY}`);
    let err: unknown;
    try {
      await readQueueFile(file, 200);
    } catch (e) {
      err = e;
    }
    expect((err as { details: { reason: string } }).details.reason).toBe('envelope-too-long');
  });
});
