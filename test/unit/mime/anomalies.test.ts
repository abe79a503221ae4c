import { gzipSync } from 'node:zlib';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { walkMessage, type WalkedPart, type WalkSummary } from '../../../src/mime/walker.js';
import { gzipInnerName } from '../../../src/mime/gzip.js';
import { chunkedSource, fakePe, messageSource, zip } from '../../support/specimens.js';

const LIMITS = {
  maxDepth: 8,
  maxParts: 1000,
  maxArchiveMembers: 1000,
  maxExpansionRatio: 100,
  ratioMinBytes: 1024 * 1024,
  maxTotalBytes: 512 * 1024 * 1024,
};

let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-anomaly-'));
});
afterEach(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

interface Seen {
  path: string;
  filename: string | undefined;
  otherNames: readonly string[] | undefined;
  depth: number;
  container: string | undefined;
  damaged: boolean | undefined;
  head: Buffer;
}

async function walk(
  lines: readonly string[] | Buffer,
  chunk?: number,
): Promise<{ seen: Seen[]; summary: WalkSummary }> {
  const bytes = Buffer.isBuffer(lines) ? lines : Buffer.from(lines.join('\r\n'), 'latin1');
  const seen: Seen[] = [];
  const source = chunk === undefined ? messageSource(bytes) : chunkedSource(bytes, chunk);
  const summary = await walkMessage(source, { limits: LIMITS, spoolDir }, (p: WalkedPart) => {
    seen.push({
      path: p.path,
      filename: p.filename,
      otherNames: p.otherNames,
      depth: p.depth,
      container: p.container,
      damaged: p.damaged,
      head: Buffer.from(p.head),
    });
    return Promise.resolve();
  });
  return { seen, summary };
}

const kinds = (s: WalkSummary) => s.anomalies.map((a) => `${a.kind}@${a.at}`);

const MIXED = 'Content-Type: multipart/mixed; boundary="AAA"';

describe('parser ambiguities are flagged, never decided silently', () => {
  it('a plain, well-formed multipart has none', async () => {
    const { summary } = await walk([
      MIXED,
      '',
      'preamble',
      '--AAA',
      'Content-Type: text/plain',
      '',
      'hello',
      '-- ',
      'signature',
      '--AAA',
      'Content-Type: application/pdf; name="a.pdf"',
      'Content-Disposition: attachment; filename="a.pdf"',
      'Content-Transfer-Encoding: base64',
      '',
      'JVBERi0=',
      '--AAA--',
      'epilogue',
      '',
    ]);
    expect(summary.anomalies).toEqual([]);
  });

  it('duplicate Content-Type, Content-Transfer-Encoding and Content-Disposition fields', async () => {
    const { summary } = await walk([
      MIXED,
      '',
      '--AAA',
      'Content-Type: text/plain',
      'Content-Type: application/x-msdownload',
      'Content-Transfer-Encoding: 7bit',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: inline',
      'Content-Disposition: attachment; filename="a.exe"',
      '',
      'x',
      '--AAA--',
      '',
    ]);
    expect(kinds(summary)).toEqual([
      'duplicate-content-type@1',
      'duplicate-transfer-encoding@1',
      'duplicate-content-disposition@1',
    ]);
  });

  it('a duplicate Content-Type on the top header block, whichever one makes it multipart', async () => {
    for (const order of [
      ['Content-Type: text/plain', MIXED],
      [MIXED, 'Content-Type: text/plain'],
    ]) {
      const { summary } = await walk([
        ...order,
        '',
        '--AAA',
        'Content-Type: text/plain',
        '',
        'x',
        '--AAA--',
        '',
      ]);
      expect(kinds(summary)).toContain('duplicate-content-type@1');
    }
  });

  it('a boundary parameter given twice', async () => {
    const { summary } = await walk([
      'Content-Type: multipart/mixed; boundary="AAA"; boundary="BBB"',
      '',
      '--AAA',
      'Content-Type: text/plain',
      '',
      'x',
      '--BBB',
      'Content-Type: text/plain',
      '',
      'y',
      '--AAA--',
      '',
    ]);
    expect(kinds(summary)).toContain('duplicate-boundary@1');
  });

  it('a body line that starts like a delimiter but is not one (--AAAB under AAA), in any chunking', async () => {
    const lines = [MIXED, '', '--AAA', 'Content-Type: text/plain', '', 'x', '--AAAB', 'y', '--AAA--', ''];
    for (const chunk of [undefined, 1, 4]) {
      const { summary } = await walk(lines, chunk);
      expect(kinds(summary), String(chunk)).toEqual(['boundary-prefix@1']);
    }
    // A line that only mentions the boundary further in is no delimiter to anyone.
    const { summary } = await walk([MIXED, '', '--AAA', '', 'x --AAAB', '--AAA--', '']);
    expect(summary.anomalies).toEqual([]);
  });

  it('a delimiter after the closing delimiter: parts a client may still show', async () => {
    const { summary } = await walk([
      MIXED,
      '',
      '--AAA',
      'Content-Type: text/plain',
      '',
      'x',
      '--AAA--',
      'epilogue',
      '--AAA',
      'Content-Type: application/octet-stream; name="hidden.exe"',
      '',
      'MZ',
      '--AAA--',
      '',
    ]);
    expect(kinds(summary)).toEqual(['boundary-after-close@1']);
  });

  it('an encoded multipart and a transfer encoding it does not decode', async () => {
    const { summary } = await walk([
      MIXED,
      'Content-Transfer-Encoding: base64',
      '',
      '--AAA',
      'Content-Type: application/octet-stream',
      'Content-Transfer-Encoding: x-gzip64',
      '',
      'x',
      '--AAA--',
      '',
    ]);
    expect(kinds(summary)).toEqual(['encoded-multipart@1', 'unknown-transfer-encoding@1']);
  });

  it('a NUL in a file name: flagged, and the name a C library would see is checked too', async () => {
    const { seen, summary } = await walk([
      MIXED,
      '',
      '--AAA',
      'Content-Type: application/octet-stream',
      "Content-Disposition: attachment; filename*=utf-8''setup.exe%00.txt",
      '',
      'x',
      '--AAA--',
      '',
    ]);
    expect(kinds(summary)).toEqual(['control-char-in-filename@1']);
    expect(seen[0]?.filename).toBe('setup.exe\0.txt');
    expect(seen[0]?.otherNames).toEqual(expect.arrayContaining(['setup.exe', 'setup.exe.txt']));
  });

  it('a Content-Type name that differs from the Content-Disposition filename is kept as another name', async () => {
    const { seen, summary } = await walk([
      MIXED,
      '',
      '--AAA',
      'Content-Type: application/octet-stream; name="invoice.exe"',
      'Content-Disposition: attachment; filename="invoice.pdf"',
      '',
      'x',
      '--AAA--',
      '',
    ]);
    expect(seen[0]).toMatchObject({ filename: 'invoice.pdf', otherNames: ['invoice.exe'] });
    expect(summary.anomalies).toEqual([]);
  });

  it('BinHex is flagged by its content type; the BinHex text in a plain body stays text', async () => {
    const typed = await walk(['Content-Type: application/mac-binhex40; name="a.hqx"', '', ':xyz:', '']);
    expect(kinds(typed.summary)).toEqual(['binhex@1']);
    // No current client decodes BinHex inline in a text: it shows the characters, nothing is hidden.
    const inline = await walk([
      'Content-Type: text/plain',
      '',
      '(This file must be converted with BinHex 4.0)',
      ':$%0[9%e!!!!!!!!!:',
      '',
    ]);
    expect(inline.summary.anomalies).toEqual([]);
  });
});

describe('gzip members', () => {
  it('walks into a gzip attachment: the file inside is a member with its header name', async () => {
    const named = gzipWithName(fakePe(), 'tool.exe');
    const { seen } = await walk([
      MIXED,
      '',
      '--AAA',
      'Content-Type: application/gzip; name="x.gz"',
      'Content-Transfer-Encoding: base64',
      '',
      named.toString('base64'),
      '--AAA--',
      '',
    ]);
    expect(seen.map((s) => [s.path, s.filename, s.depth, s.container])).toEqual([
      ['1', 'x.gz', 0, 'gzip'],
      ['1/tool.exe', 'tool.exe', 1, undefined],
    ]);
    expect(seen[1]?.head.subarray(0, 2).toString('latin1')).toBe('MZ');
  });

  it('names the member after the outer name without a header name; a tgz holds a tar; a zip inside is opened', async () => {
    expect(gzipInnerName(gzipSync(Buffer.from('x')), 'report.pdf.gz')).toBe('report.pdf');
    expect(gzipInnerName(gzipSync(Buffer.from('x')), 'src.tgz')).toBe('src.tar');
    expect(gzipInnerName(gzipSync(Buffer.from('x')), 'blob')).toBeUndefined();
    const { seen } = await walk([
      'Content-Type: application/gzip; name="a.zip.gz"',
      'Content-Transfer-Encoding: base64',
      '',
      gzipSync(zip({ 'inner.exe': fakePe() })).toString('base64'),
      '',
    ]);
    expect(seen.map((s) => s.path)).toEqual(['1', '1/a.zip', '1/a.zip/inner.exe']);
  });

  it('a damaged gzip yields its member as damaged, not as clean content', async () => {
    const broken = gzipSync(Buffer.alloc(10_000, 0x41));
    broken.fill(0xff, 20, 40);
    const { seen } = await walk([
      'Content-Type: application/gzip; name="a.gz"',
      'Content-Transfer-Encoding: base64',
      '',
      broken.toString('base64'),
      '',
    ]);
    expect(seen[1]).toMatchObject({ path: '1/a', damaged: true });
  });

  it('a gzip bomb stops the walk at the ratio limit', async () => {
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024));
    const summary = await walkMessage(
      messageSource(
        Buffer.from(
          [
            'Content-Type: application/gzip',
            'Content-Transfer-Encoding: base64',
            '',
            bomb.toString('base64'),
            '',
          ].join('\r\n'),
        ),
      ),
      { limits: LIMITS, spoolDir },
      () => Promise.resolve(),
    );
    expect(summary.limit?.kind).toBe('ratio');
  });
});

/** gzip with the FNAME field set, as `gzip -N` writes it. */
function gzipWithName(data: Buffer, name: string): Buffer {
  const plain = gzipSync(data);
  const head = Buffer.from(plain.subarray(0, 10));
  head[3] = (head[3] as number) | 0x08;
  return Buffer.concat([head, Buffer.from(`${name}\0`, 'latin1'), plain.subarray(10)]);
}
