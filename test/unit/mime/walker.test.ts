import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isSandgateError } from '../../../src/core/errors.js';
import { walkMessage, type WalkedPart, type WalkLimits, type WalkOptions } from '../../../src/mime/walker.js';
import {
  buildMessage,
  chunkedSource,
  EICAR,
  manyMembers,
  markEncrypted,
  messageSource,
  nestedZips,
  ratioBomb,
  zip,
  oversizedPartHeader,
} from '../../support/specimens.js';

const LIMITS: WalkLimits = {
  maxDepth: 8,
  maxParts: 1000,
  maxArchiveMembers: 1000,
  maxExpansionRatio: 100,
  ratioMinBytes: 1024 * 1024,
  maxTotalBytes: 512 * 1024 * 1024,
};

interface Seen extends Omit<WalkedPart, 'open' | 'head' | 'scan'> {
  readonly bytes: Buffer;
}

/** A part's fields as a plain object: a part is read through its accessors, not spread. */
function fields(p: WalkedPart): Omit<Seen, 'bytes'> {
  return {
    path: p.path,
    depth: p.depth,
    contentType: p.contentType,
    filename: p.filename,
    size: p.size,
    sha256: p.sha256,
    isAttachment: p.isAttachment,
    container: p.container,
    encrypted: p.encrypted,
    unsupportedMethod: p.unsupportedMethod,
    damaged: p.damaged,
  };
}

let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-walk-'));
});
afterEach(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

async function walk(bytes: Buffer, opts: Partial<WalkOptions> = {}, chunk?: number) {
  const seen: Seen[] = [];
  const source = chunk === undefined ? messageSource(bytes) : chunkedSource(bytes, chunk);
  const summary = await walkMessage(source, { limits: LIMITS, spoolDir, ...opts }, async (part) => {
    const first = Buffer.concat(await readAll(part.open()));
    // open() may be called several times and gives the same bytes each time.
    expect(Buffer.concat(await readAll(part.open())).equals(first)).toBe(true);
    seen.push({ ...fields(part), bytes: first });
  });
  return { seen, summary };
}

async function readAll(r: NodeJS.ReadableStream): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return out;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('walkMessage: MIME parts', () => {
  const binary = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37) & 0xff));
  const msg = buildMessage({
    text: 'caf\u00e9 =\r\n',
    textEncoding: 'quoted-printable',
    attachments: [
      { filename: 'data.bin', content: binary, encoding: 'base64' },
      {
        filename: 'notes.txt',
        contentType: 'text/plain',
        content: Buffer.from('a=b\r\nline two\r\n'),
        encoding: 'quoted-printable',
      },
    ],
  });

  for (const chunk of [undefined, 1, 7, 4096]) {
    it(`decodes base64 and quoted-printable parts (chunks: ${chunk ?? 'whole'})`, async () => {
      const { seen, summary } = await walk(msg, {}, chunk);
      expect(seen.map((p) => p.path)).toEqual(['1', '2', '3']);
      expect(seen[0]!.bytes.toString('utf8')).toBe('caf\u00e9 =\r\n');
      expect(seen[1]!.bytes.equals(binary)).toBe(true);
      expect(seen[1]!.sha256).toBe(sha(binary));
      expect(seen[1]!.size).toBe(binary.length);
      expect(seen[1]).toMatchObject({
        filename: 'data.bin',
        isAttachment: true,
        depth: 0,
        contentType: 'application/octet-stream',
      });
      expect(seen[2]!.bytes.toString()).toBe('a=b\r\nline two\r\n');
      expect(seen[0]!.isAttachment).toBe(false);
      expect(summary).toMatchObject({ parts: 3, members: 0, stopped: false });
      expect(summary.limit).toBeUndefined();
    });
  }

  it('decodes RFC 2231 and encoded-word file names', async () => {
    const raw = [
      'Content-Type: multipart/mixed; boundary=b',
      '',
      '--b',
      'Content-Type: application/octet-stream',
      "Content-Disposition: attachment; filename*=utf-8''%D1%81%D1%87%D0%B5%D1%82.pdf.exe",
      '',
      'x',
      '--b',
      'Content-Type: application/octet-stream; name="=?UTF-8?B?0YHRh9C10YIuZG9j?="',
      '',
      'y',
      '--b--',
      '',
    ].join('\r\n');
    const { seen } = await walk(Buffer.from(raw));
    expect(seen.map((p) => p.filename)).toEqual([
      '\u0441\u0447\u0435\u0442.pdf.exe',
      '\u0441\u0447\u0435\u0442.doc',
    ]);
  });

  it('walks into an attached message/rfc822 at depth + 1', async () => {
    const inner = buildMessage({ attachments: [{ filename: 'eicar.txt', content: EICAR }] });
    const msg2 = buildMessage({
      attachments: [
        { filename: 'fwd.eml', contentType: 'message/rfc822', content: inner, encoding: 'base64' },
      ],
    });
    const { seen } = await walk(msg2);
    expect(seen.map((p) => [p.path, p.depth, p.container ?? ''])).toEqual([
      ['1', 0, ''],
      ['2', 0, 'message'],
      ['2.1', 1, ''],
      ['2.2', 1, ''],
    ]);
    expect(seen[3]!.bytes.equals(EICAR)).toBe(true);
  });

  it('walks a single-part message whose body is base64 (fast path) the same as split', async () => {
    const raw = Buffer.from(
      `Subject: x\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n${EICAR.toString('base64')}\r\n`,
    );
    const { seen } = await walk(raw, {}, 5);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ path: '1', filename: 'a.pdf', contentType: 'application/pdf' });
    expect(seen[0]!.bytes.equals(EICAR)).toBe(true);
  });

  it('spools large parts to files and removes them after each callback', async () => {
    const big = Buffer.alloc(300_000, 0x61);
    const msg2 = buildMessage({
      attachments: [
        { filename: 'a.txt', content: big },
        { filename: 'b.txt', content: big },
      ],
    });
    const during: number[] = [];
    await walkMessage(
      messageSource(msg2),
      { limits: LIMITS, spoolDir, memoryThreshold: 1024 },
      async (part) => {
        during.push(readdirSync(spoolDir).length);
        expect(Buffer.concat(await readAll(part.open())).length).toBe(part.size);
      },
    );
    // The short text body stays in memory; each big attachment has one file while it is walked.
    expect(during).toEqual([0, 1, 1]);
    expect(readdirSync(spoolDir)).toEqual([]);
  });

  it("stops when onPart returns 'stop'", async () => {
    const calls: string[] = [];
    const summary = await walkMessage(messageSource(msg), { limits: LIMITS, spoolDir }, (p) => {
      calls.push(p.path);
      return Promise.resolve(p.path === '2' ? 'stop' : undefined);
    });
    expect(calls).toEqual(['1', '2']);
    expect(summary.stopped).toBe(true);
  });

  it('walks garbage best-effort and rejects an oversized header block with ERR_MESSAGE_MALFORMED', async () => {
    const noise = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 131 + 7) & 0xff));
    const { summary } = await walk(noise);
    expect(summary.parts).toBe(1);

    const err = await walk(oversizedPartHeader()).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_MESSAGE_MALFORMED')).toBe(true);
  });

  it('rejects with ERR_ABORTED when the signal is aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await walk(msg, { signal: ac.signal }).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_ABORTED')).toBe(true);
  });
});

describe('walkMessage: archives', () => {
  const attach = (content: Buffer, filename = 'a.zip') =>
    buildMessage({ attachments: [{ filename, contentType: 'application/zip', content }] });

  it('yields zip members (recursively), by magic bytes not by name', async () => {
    const inner = zip({ 'eicar.txt': EICAR, 'dir/readme.md': Buffer.from('# hi\n') });
    const { seen, summary } = await walk(
      attach(zip({ 'inner.zip': inner, 'plain.txt': Buffer.from('p') }), 'archive.dat'),
    );
    expect(seen.map((p) => [p.path, p.depth, p.container ?? ''])).toEqual([
      ['1', 0, ''],
      ['2', 0, 'zip'],
      ['2/inner.zip', 1, 'zip'],
      ['2/inner.zip/eicar.txt', 2, ''],
      ['2/inner.zip/dir/readme.md', 2, ''],
      ['2/plain.txt', 1, ''],
    ]);
    expect(seen[3]!.bytes.equals(EICAR)).toBe(true);
    expect(seen[4]!.filename).toBe('readme.md');
    expect(summary.members).toBe(4);
  });

  it('yields encrypted members without content', async () => {
    const { seen } = await walk(
      attach(markEncrypted(zip({ 'secret.txt': Buffer.from('x'.repeat(100)) }, 0))),
    );
    expect(seen[2]).toMatchObject({ path: '2/secret.txt', encrypted: true, size: 0, sha256: '' });
    expect(seen[2]!.bytes.length).toBe(0);
  });

  it('reports a ratio bomb without expanding it', async () => {
    let memberSeen = false;
    const summary = await walkMessage(
      messageSource(attach(ratioBomb(8))),
      { limits: LIMITS, spoolDir },
      (p) => {
        if (p.path.includes('/')) memberSeen = true;
        return Promise.resolve();
      },
    );
    expect(summary.limit).toEqual({ kind: 'ratio', at: '2/zeros.bin' });
    expect(memberSeen).toBe(false);
    expect(summary.bytes).toBeLessThan(2 * 1024 * 1024);
    expect(readdirSync(spoolDir)).toEqual([]);
  });

  it('reports too many members before decompressing any', async () => {
    const { seen, summary } = await walk(attach(manyMembers(50)), {
      limits: { ...LIMITS, maxArchiveMembers: 20 },
    });
    expect(summary.limit).toEqual({ kind: 'members', at: '2' });
    expect(seen.some((p) => p.path.includes('/'))).toBe(false);
  });

  it('reports nesting deeper than maxDepth', async () => {
    const { summary } = await walk(attach(nestedZips(6)), { limits: { ...LIMITS, maxDepth: 3 } });
    expect(summary.limit?.kind).toBe('depth');
  });

  it('reports total decoded bytes over the limit and stops reading', async () => {
    const big = Buffer.alloc(200_000, 0x62);
    const msg = buildMessage({
      attachments: [
        { filename: 'a.bin', content: big },
        { filename: 'b.bin', content: big },
      ],
    });
    const { seen, summary } = await walk(msg, { limits: { ...LIMITS, maxTotalBytes: 300_000 } });
    expect(summary.limit).toEqual({ kind: 'total-bytes', at: '3' });
    expect(seen.map((p) => p.path)).toEqual(['1', '2']);
  });

  it('reports too many MIME parts', async () => {
    const msg = buildMessage({
      attachments: Array.from({ length: 12 }, (_, i) => ({
        filename: `f${i}.txt`,
        content: Buffer.from('x'),
      })),
    });
    const { summary } = await walk(msg, { limits: { ...LIMITS, maxParts: 5 } });
    expect(summary.limit?.kind).toBe('parts');
  });

  it('counts an archive without a readable directory and still yields it', async () => {
    const broken = zip({ 'a.txt': Buffer.from('hello') }).subarray(0, 40);
    const { seen, summary } = await walk(attach(broken));
    expect(seen[1]!.container).toBe('zip');
    expect(summary.unreadableArchives).toBe(1);
  });
});

describe('a failure of the caller', () => {
  it('is rethrown as onPart threw it, never read as malformed MIME (also from an attached message or zip member)', async () => {
    const inner = buildMessage({
      subject: 'inner',
      attachments: [{ filename: 'x.bin', content: Buffer.from('x') }],
    });
    const messages = [
      buildMessage({ attachments: [{ filename: 'a.txt', content: Buffer.from('hello\r\n') }] }),
      buildMessage({ attachments: [{ filename: 'fwd.eml', contentType: 'message/rfc822', content: inner }] }),
      buildMessage({
        attachments: [{ filename: 'a.zip', content: zip({ 'in.txt': Buffer.from('member') }) }],
      }),
    ];
    for (const [i, bytes] of messages.entries()) {
      // A state lookup that failed (node-postgres errors carry a SQLSTATE in `code`).
      const failure = Object.assign(new Error('the database system is not yet accepting connections'), {
        code: '57P03',
      });
      let parts = 0;
      const walked = walkMessage(messageSource(bytes), { limits: LIMITS, spoolDir }, async (part) => {
        parts++;
        if (part.depth > 0 || (i === 0 && part.filename === 'a.txt')) throw failure;
        return Promise.resolve();
      });
      await expect(walked, `message ${i}`).rejects.toBe(failure);
      expect(parts).toBeGreaterThan(0);
      expect(readdirSync(spoolDir)).toEqual([]);
    }
  });
});
