import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { walkMessage, type WalkLimits, type WalkSummary } from '../../../src/mime/walker.js';
import { beginBase64, textMessage, uuencode, yenc } from '../../support/embedded-specimens.js';
import { buildMessage, chunkedSource, EICAR, fakePe, messageSource, zip } from '../../support/specimens.js';

const LIMITS: WalkLimits = {
  maxDepth: 8,
  maxParts: 1000,
  maxArchiveMembers: 1000,
  maxExpansionRatio: 100,
  ratioMinBytes: 1024 * 1024,
  maxTotalBytes: 512 * 1024 * 1024,
};

interface Seen {
  path: string;
  depth: number;
  contentType: string;
  filename: string | undefined;
  embedded: string | undefined;
  isAttachment: boolean;
  bytes: Buffer;
}

let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-embedded-'));
});
afterEach(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

async function walk(
  bytes: Buffer,
  options: { chunk?: number; limits?: Partial<WalkLimits>; memoryThreshold?: number } = {},
): Promise<{ seen: Seen[]; summary: WalkSummary }> {
  const seen: Seen[] = [];
  const source = options.chunk === undefined ? messageSource(bytes) : chunkedSource(bytes, options.chunk);
  const summary = await walkMessage(
    source,
    {
      limits: { ...LIMITS, ...options.limits },
      spoolDir,
      ...(options.memoryThreshold !== undefined ? { memoryThreshold: options.memoryThreshold } : {}),
    },
    async (part) => {
      const chunks: Buffer[] = [];
      for await (const c of part.open()) chunks.push(c as Buffer);
      seen.push({
        path: part.path,
        depth: part.depth,
        contentType: part.contentType,
        filename: part.filename,
        embedded: part.embedded,
        isAttachment: part.isAttachment,
        bytes: Buffer.concat(chunks),
      });
    },
  );
  return { seen, summary };
}

const blocks = (seen: readonly Seen[]) => seen.filter((s) => s.embedded !== undefined);

describe('files embedded in text parts', () => {
  it('decodes a uuencoded program in a plain-text body as an attachment of its own', async () => {
    const pe = fakePe();
    const { seen, summary } = await walk(textMessage(`Hi,\r\n${uuencode(pe, 'setup.exe')}\r\nbye\r\n`));
    expect(seen[0]).toMatchObject({ path: '1', contentType: 'text/plain', embedded: undefined });
    expect(blocks(seen)).toHaveLength(1);
    expect(blocks(seen)[0]).toMatchObject({
      path: '1/uuencode-1',
      depth: 0,
      filename: 'setup.exe',
      embedded: 'uuencode',
      isAttachment: true,
      contentType: 'application/octet-stream',
    });
    expect(blocks(seen)[0]?.bytes.equals(pe)).toBe(true);
    expect(summary.parts).toBe(2);
    expect(summary.anomalies).toEqual([]);
  });

  it('decodes every block of a text, each with its own bytes, across any chunk seams', async () => {
    const a = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff));
    const text = `one\r\n${uuencode(a, 'a.bin')}\r\ntwo\r\n${uuencode(EICAR, 'b.txt', '0600')}\r\n`;
    for (const chunk of [undefined, 1, 3, 7, 61]) {
      const { seen } = await walk(textMessage(text), chunk === undefined ? {} : { chunk });
      expect(blocks(seen).map((b) => b.filename)).toEqual(['a.bin', 'b.txt']);
      expect(blocks(seen)[0]?.bytes.equals(a)).toBe(true);
      expect(blocks(seen)[1]?.bytes.equals(EICAR)).toBe(true);
    }
  });

  it('decodes the x-uuencode, x-uue and uuencode transfer encodings', async () => {
    for (const cte of ['x-uuencode', 'x-uue', 'uuencode']) {
      const bytes = buildMessage({
        attachments: [
          {
            filename: 'photo.jpg',
            contentType: 'application/octet-stream',
            content: Buffer.from(uuencode(fakePe(), 'photo.jpg')),
            encoding: '7bit',
          },
        ],
      });
      const { seen, summary } = await walk(
        Buffer.from(
          bytes
            .toString('latin1')
            .replace(
              'Content-Transfer-Encoding: 7bit\r\nContent-Disposition',
              `Content-Transfer-Encoding: ${cte}\r\nContent-Disposition`,
            ),
          'latin1',
        ),
      );
      expect(
        blocks(seen).map((b) => [b.path, b.embedded]),
        cte,
      ).toEqual([['2/uuencode-1', 'uuencode']]);
      expect(blocks(seen)[0]?.bytes.equals(fakePe())).toBe(true);
      expect(summary.anomalies).toEqual([]);
    }
  });

  it('flags a uuencode transfer encoding without a begin line, which it cannot decode', async () => {
    const { summary } = await walk(
      textMessage(
        "M86)C9&5F9VAI:FML;6YO<'%R<W1U=G=X>7I!0D-$149'2$E*2TQ-3D]0\r\n",
        'application/octet-stream',
        ['Content-Transfer-Encoding: x-uuencode'],
      ),
    );
    expect(summary.anomalies).toEqual([{ kind: 'uuencode-without-begin', at: '1' }]);
  });

  it('decodes begin-base64 blocks (uuencode -m)', async () => {
    const pe = fakePe();
    const { seen } = await walk(textMessage(`see:\r\n${beginBase64(pe, 'x.pdf')}\r\n`));
    expect(blocks(seen)).toHaveLength(1);
    expect(blocks(seen)[0]).toMatchObject({ embedded: 'base64', filename: 'x.pdf' });
    expect(blocks(seen)[0]?.bytes.equals(pe)).toBe(true);
  });

  it('decodes single-part yEnc, names with spaces included, and flags multi-part yEnc', async () => {
    const data = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 13) & 0xff));
    const single = await walk(textMessage(yenc(data, 'my file.exe')));
    expect(blocks(single.seen)).toHaveLength(1);
    expect(blocks(single.seen)[0]).toMatchObject({ embedded: 'yenc', filename: 'my file.exe' });
    expect(blocks(single.seen)[0]?.bytes.equals(data)).toBe(true);
    expect(single.summary.anomalies).toEqual([]);

    const multi = await walk(textMessage(yenc(data, 'part.rar', { part: 1, total: 3 })));
    expect(multi.summary.anomalies).toEqual([{ kind: 'yenc-multipart', at: '1' }]);
    // The piece itself is still decoded and scanned.
    expect(blocks(multi.seen)[0]?.bytes.equals(data)).toBe(true);
  });

  it('decodes base64 data: URIs in HTML, not in plain text, and leaves percent-encoded ones alone', async () => {
    const pe = fakePe();
    const html =
      `<html><body><img src="data:image/png;base64,${pe.toString('base64').replace(/(.{60})/g, '$1\r\n')}">` +
      `<a href='DATA:application/x-msdownload;BASE64,${EICAR.toString('base64')}'>x</a>` +
      `<img src="data:image/svg+xml,%3Csvg%3E%3C/svg%3E"></body></html>`;
    for (const chunk of [undefined, 5]) {
      const { seen } = await walk(textMessage(html, 'text/html'), chunk === undefined ? {} : { chunk });
      expect(blocks(seen).map((b) => [b.path, b.contentType, b.embedded])).toEqual([
        ['1/data-uri-1', 'image/png', 'data-uri'],
        ['1/data-uri-2', 'application/x-msdownload', 'data-uri'],
      ]);
      expect(blocks(seen)[0]?.bytes.equals(pe)).toBe(true);
      expect(blocks(seen)[1]?.bytes.equals(EICAR)).toBe(true);
    }
    const plain = await walk(textMessage(`data:image/png;base64,${pe.toString('base64')}`));
    expect(blocks(plain.seen)).toEqual([]);
  });

  it('leaves prose alone: a "begin" sentence, an unterminated header, a yEnc line without its keywords', async () => {
    const prose = [
      'begin 10 minutes early, please',
      'We begin 644 tests tomorrow.',
      'begin 644 notes.txt',
      'and then the meeting ends',
      '=ybegin is how yEnc starts',
      'end',
    ].join('\r\n');
    const { seen, summary } = await walk(textMessage(prose));
    expect(blocks(seen)).toEqual([]);
    expect(summary.anomalies).toEqual([]);
  });

  it('decodes an unterminated block up to the end of its text, as a client would show it', async () => {
    const full = uuencode(fakePe(), 'cut.exe');
    const cut = full.slice(0, full.indexOf('\r\n`'));
    const { seen } = await walk(textMessage(cut));
    expect(blocks(seen)[0]?.bytes.equals(fakePe())).toBe(true);
  });

  it('decodes blocks of a text spooled to a file, and leaves no spool file behind', async () => {
    const big = Buffer.alloc(300 * 1024, 0x41);
    const { seen } = await walk(textMessage(`${uuencode(big, 'big.bin')}\r\n`), {
      memoryThreshold: 16 * 1024,
    });
    expect(blocks(seen)[0]?.bytes.equals(big)).toBe(true);
    expect(readdirSync(spoolDir)).toEqual([]);
  });

  it('walks into an archive decoded from a block', async () => {
    const { seen } = await walk(textMessage(uuencode(zip({ 'run.exe': fakePe() }), 'pics.zip')));
    expect(seen.map((s) => s.path)).toEqual(['1', '1/uuencode-1', '1/uuencode-1/run.exe']);
    expect(seen[2]).toMatchObject({ depth: 1, filename: 'run.exe' });
  });

  it('counts decoded blocks against the part and total-bytes limits', async () => {
    const many = Array.from({ length: 5 }, (_, i) => uuencode(Buffer.from(`file ${i}`), `f${i}.txt`)).join(
      '\r\n',
    );
    const parts = await walk(textMessage(many), { limits: { maxParts: 3 } });
    expect(parts.summary.limit).toEqual({ kind: 'parts', at: '1/uuencode-3' });
    const bytes = await walk(textMessage(uuencode(Buffer.alloc(100_000), 'z.bin')), {
      limits: { maxTotalBytes: 150_000 },
    });
    expect(bytes.summary.limit?.kind).toBe('total-bytes');
    expect(readdirSync(spoolDir)).toEqual([]);
  });
});
