import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { quarantineSchema } from '../../../src/config/quarantine.js';
import { analyseMessage } from '../../../src/core/content-key.js';
import { BufferMessage } from '../../../src/mime/spool.js';
import { releasedMessage } from '../../../src/quarantine/released-message.js';

const env = { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' };
const ORIGINAL =
  'Received: from a by b; Tue, 2 Jan 2024 10:00:00 +0000\r\n' +
  'Return-Path: <s@x.test>\r\n' +
  'X-Sandgate-Mark: v=1; k=clean; id=forged; t=1; mac=xyz\r\n' +
  'Subject: hi\r\n' +
  '\tfolded\r\n' +
  'From: s@x.test\r\n\r\nbody line\r\n.dot line\r\n';

async function run(original: string, chunk = 7): Promise<string> {
  const bytes = Buffer.from(original, 'latin1');
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
  const out: Buffer[] = [];
  for await (const b of releasedMessage(Readable.from(chunks), { mark: 'MARK' })) out.push(b);
  return Buffer.concat(out).toString('latin1');
}

async function keyOf(text: string): Promise<string> {
  return (await analyseMessage(new BufferMessage('k', env, Buffer.from(text, 'latin1')))).contentKey;
}

describe('releasedMessage', () => {
  it('puts the mark after the leading trace fields and drops inbound X-Sandgate fields', async () => {
    for (const chunk of [1, 2, 7, 1000]) {
      const out = await run(ORIGINAL, chunk);
      expect(out).toBe(
        'Received: from a by b; Tue, 2 Jan 2024 10:00:00 +0000\r\n' +
          'Return-Path: <s@x.test>\r\n' +
          'X-Sandgate-Mark: MARK\r\n' +
          'Subject: hi\r\n\tfolded\r\nFrom: s@x.test\r\n\r\nbody line\r\n.dot line\r\n',
      );
    }
  });

  it('keeps the content key, also when the next hop prepends a Received field', async () => {
    const out = await run(ORIGINAL);
    expect(await keyOf(out)).toBe(await keyOf(ORIGINAL));
    expect(await keyOf(`Received: by next.hop\r\n${out}`)).toBe(await keyOf(ORIGINAL));
  });

  it('writes the mark in the line ends of an LF original (a CommuniGate queue file on Unix)', async () => {
    for (const chunk of [1, 3, 1000]) {
      const out = await run(ORIGINAL.replace(/\r\n/g, '\n'), chunk);
      expect(out).not.toContain('\r');
      expect(out).toContain('Return-Path: <s@x.test>\nX-Sandgate-Mark: MARK\nSubject: hi');
    }
  });

  it('handles a message of headers only and one without trace fields', async () => {
    expect(await run('Subject: x\r\nFrom: y')).toBe('X-Sandgate-Mark: MARK\r\nSubject: x\r\nFrom: y\r\n');
    expect(await run('Subject: x\r\n\r\nb')).toBe('X-Sandgate-Mark: MARK\r\nSubject: x\r\n\r\nb');
  });
});

describe('quarantine config', () => {
  it('parses release targets and refuses nonsense', () => {
    const c = quarantineSchema.parse({
      release: { target: 'smtp://127.0.0.1:10026' },
      retentionInterval: '10m',
    });
    expect(c.release.target).toEqual({ kind: 'smtp', host: '127.0.0.1', port: 10026 });
    expect(c.retentionInterval).toBe(600_000);
    expect(
      quarantineSchema.parse({ release: { target: 'submitted:/var/CommuniGate/Submitted' } }).release.target,
    ).toEqual({
      kind: 'submitted',
      path: '/var/CommuniGate/Submitted',
    });
    expect(quarantineSchema.parse({ release: { target: 'directory:./released' } }).release.target).toEqual({
      kind: 'directory',
      path: './released',
    });
    expect(quarantineSchema.parse({ release: { target: 'lmtp://[::1]:24' } }).release).toMatchObject({
      target: { kind: 'lmtp', host: '::1', port: 24 },
      tls: 'opportunistic',
    });
    expect(quarantineSchema.parse({}).notify.enabled).toBe(false);
    expect(quarantineSchema.safeParse({ release: { target: 'nowhere' } }).success).toBe(false);
    expect(quarantineSchema.safeParse({ unknown: 1 }).success).toBe(false);
    expect(
      quarantineSchema.parse({ notify: { enabled: 'true', to: 'a@x.test,b@x.test' } }).notify.to,
    ).toEqual(['a@x.test', 'b@x.test']);
  });
});
