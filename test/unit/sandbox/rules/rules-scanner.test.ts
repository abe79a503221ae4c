import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rulesSchema } from '../../../../src/config/scanners.js';
import { isSandgateError } from '../../../../src/core/errors.js';
import type { Finding } from '../../../../src/core/outcome.js';
import type { ScanContext } from '../../../../src/core/scanner.js';
import { RulesScanner } from '../../../../src/sandbox/rules/rules-scanner.js';
import {
  buildMessage,
  chunkedSource,
  EICAR,
  fakeElf,
  manyMembers,
  markEncrypted,
  messageSource,
  nestedZips,
  oleDocClean,
  specimens,
  zip,
  type SpecimenName,
  oversizedPartHeader,
} from '../../../support/specimens.js';
import { beginBase64, embeddedSpecimens, textMessage, yenc } from '../../../support/embedded-specimens.js';

let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-rules-'));
});
afterEach(() => {
  expect(readdirSync(spoolDir)).toEqual([]); // no spool file outlives a scan
  rmSync(spoolDir, { recursive: true, force: true });
});

const noopLog = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  fatal() {},
  child: () => noopLog,
};

function ctx(signal = new AbortController().signal): ScanContext {
  return {
    signal,
    deadline: Date.now() + 30_000,
    log: noopLog,
    memo: { run: (_k, compute) => compute() },
    now: Date.now,
  };
}

function scanner(settings: Record<string, unknown> = {}): RulesScanner {
  return new RulesScanner(rulesSchema.parse(settings), { spoolDir });
}

async function scan(bytes: Buffer, settings: Record<string, unknown> = {}): Promise<Finding> {
  return scanner(settings).scan(messageSource(bytes), ctx());
}

const threats = (f: Finding) => (f.kind === 'malicious' || f.kind === 'suspicious' ? f.threats : []);

describe('RulesScanner on specimens', () => {
  const expected: Record<SpecimenName, [Finding['kind'], string?]> = {
    eicarPlain: ['malicious', 'Sandgate.Test.EICAR'],
    eicarBase64: ['malicious', 'Sandgate.Test.EICAR'],
    eicarQuotedPrintable: ['malicious', 'Sandgate.Test.EICAR'],
    eicarZip: ['malicious', 'Sandgate.Test.EICAR'],
    eicarNestedZip: ['malicious', 'Sandgate.Test.EICAR'],
    renamedPdfExe: ['malicious', 'Sandgate.Attachment.DoubleExtension'],
    blockedExtension: ['malicious', 'Sandgate.Attachment.BlockedExtension'],
    disguisedExecutable: ['malicious', 'Sandgate.Attachment.DisguisedExecutable'],
    encryptedZip: ['failed'],
    zipBomb: ['suspicious', 'Sandgate.Archive.Bomb'],
    macroDocm: ['suspicious', 'Sandgate.Office.Macro'],
    macroDoc: ['suspicious', 'Sandgate.Office.Macro'],
    cleanText: ['clean'],
    cleanWithAttachment: ['clean'],
  };
  for (const [name, [kind, threat]] of Object.entries(expected) as [
    SpecimenName,
    [Finding['kind'], string?],
  ][]) {
    it(`${name} -> ${kind}${threat ? ` ${threat}` : ''}`, async () => {
      const f = await scan(specimens[name]());
      expect(f.kind).toBe(kind);
      if (threat !== undefined) expect(threats(f)).toContain(threat);
    });
  }

  it('names the rule and the part path in details', async () => {
    const f = await scan(specimens.eicarNestedZip());
    expect(f.details).toMatchObject({ rule: 'eicar', part: '2/inner.zip/eicar.txt' });
    const enc = await scan(specimens.encryptedZip());
    expect(enc).toMatchObject({ kind: 'failed', reason: 'encrypted', details: { part: '2/report.txt' } });
  });
});

describe('EICAR search across chunk boundaries', () => {
  it('finds EICAR split at every offset of the raw stream', async () => {
    const msg = specimens.eicarPlain();
    const s = scanner();
    for (const size of [1, 2, 3, 5, 8, 13, 67, 68, 69]) {
      const f = await s.scan(chunkedSource(msg, size), ctx());
      expect([size, f.kind]).toEqual([size, 'malicious']);
    }
  });

  it('finds EICAR straddling the 64 KiB read boundary of a spooled part', async () => {
    for (const at of [65536 - 30, 65536 - 1, 65536, 2 * 65536 - 34]) {
      const content = Buffer.concat([Buffer.alloc(at, 0x20), EICAR, Buffer.alloc(1000, 0x20)]);
      const msg = buildMessage({ attachments: [{ filename: 'padded.txt', content, encoding: 'base64' }] });
      // memorySpoolThreshold 0: the part is read back from a file in 64 KiB chunks.
      const f = await scan(msg, { memorySpoolThreshold: 0 });
      expect([at, f.kind, f.details?.part]).toEqual([at, 'malicious', '2']);
    }
  });

  it('does not flag a near miss', async () => {
    const near = Buffer.from(EICAR);
    near[near.length - 1] = 0x2b;
    expect((await scan(buildMessage({ attachments: [{ filename: 'n.txt', content: near }] }))).kind).toBe(
      'clean',
    );
  });
});

describe('RulesScanner settings', () => {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const payload = Buffer.from('harmless bytes but blocked by hash\n');

  it('blocks a listed SHA-256 and skips an allowed one (and what it contains)', async () => {
    const msg = buildMessage({ attachments: [{ filename: 'x.txt', content: payload }] });
    const blocked = await scan(msg, { blockedSha256: [sha(payload)] });
    expect(threats(blocked)).toEqual(['Sandgate.Hash.Blocked']);

    const archive = zip({ 'eicar.txt': EICAR });
    const zipped = buildMessage({ attachments: [{ filename: 'released.zip', content: archive }] });
    expect((await scan(zipped)).kind).toBe('malicious');
    expect((await scan(zipped, { allowedSha256: [sha(archive).toUpperCase()] })).kind).toBe('clean');
  });

  it('treats macros as configured', async () => {
    expect((await scan(specimens.macroDocm(), { macros: 'off' })).kind).toBe('clean');
    expect((await scan(specimens.macroDoc(), { macros: 'malicious' })).kind).toBe('malicious');
    const cleanOle = buildMessage({ attachments: [{ filename: 'plain.doc', content: oleDocClean() }] });
    expect((await scan(cleanOle)).kind).toBe('clean');
  });

  it('turns off EICAR, double extensions and disguised executables when asked', async () => {
    expect((await scan(specimens.eicarPlain(), { eicar: false })).kind).toBe('clean');
    const f = await scan(specimens.renamedPdfExe(), { blockDoubleExtensions: false });
    expect(threats(f)).toEqual(['Sandgate.Attachment.BlockedExtension']);
    expect(
      (await scan(specimens.renamedPdfExe(), { blockDoubleExtensions: false, blockedExtensions: [] })).kind,
    ).toBe('clean');
    expect((await scan(specimens.disguisedExecutable(), { blockDisguisedExecutables: false })).kind).toBe(
      'clean',
    );
  });

  it('flags an ELF binary named .jpg, not one named as an executable, and not plain text starting with MZ', async () => {
    const elf = await scan(buildMessage({ attachments: [{ filename: 'photo.jpg', content: fakeElf() }] }));
    expect(threats(elf)).toEqual(['Sandgate.Attachment.DisguisedExecutable']);
    const named = await scan(buildMessage({ attachments: [{ filename: 'tool.bin', content: fakeElf() }] }), {
      blockedExtensions: [],
    });
    expect(named.kind).toBe('clean');
    const mz = Buffer.from(`MZ${'this is only prose about Mazda cars, nothing else. '.repeat(4)}`);
    expect((await scan(buildMessage({ text: mz }))).kind).toBe('clean');
  });

  it('judges the names of encrypted members', async () => {
    const archive = markEncrypted(zip({ 'invoice.pdf.exe': Buffer.from('x') }, 0));
    const f = await scan(buildMessage({ attachments: [{ filename: 'a.zip', content: archive }] }));
    expect(threats(f)).toEqual(['Sandgate.Attachment.DoubleExtension']);
  });

  it('maps walk limits: members and depth -> bomb, parts -> too many parts, total bytes -> failed(too-large)', async () => {
    const members = await scan(
      buildMessage({ attachments: [{ filename: 'm.zip', content: manyMembers(30) }] }),
      {
        limits: { maxArchiveMembers: 10 },
      },
    );
    expect(members).toMatchObject({ kind: 'suspicious', threats: ['Sandgate.Archive.Bomb'], partial: true });
    const deep = await scan(buildMessage({ attachments: [{ filename: 'd.zip', content: nestedZips(6) }] }), {
      limits: { maxDepth: 3 },
    });
    expect(threats(deep)).toEqual(['Sandgate.Archive.Bomb']);
    const many = buildMessage({
      attachments: Array.from({ length: 8 }, (_, i) => ({
        filename: `f${i}.txt`,
        content: Buffer.from('x'),
      })),
    });
    expect(threats(await scan(many, { limits: { maxParts: 4 } }))).toEqual(['Sandgate.Mime.TooManyParts']);
    const big = buildMessage({ attachments: [{ filename: 'big.txt', content: Buffer.alloc(50_000, 0x61) }] });
    expect(await scan(big, { limits: { maxTotalBytes: 10_000 } })).toMatchObject({
      kind: 'failed',
      reason: 'too-large',
    });
  });

  it('reports unparseable MIME as suspicious Sandgate.Mime.Malformed', async () => {
    expect(threats(await scan(oversizedPartHeader()))).toEqual(['Sandgate.Mime.Malformed']);
  });

  it('throws ERR_SCANNER_TIMEOUT when the deadline signal fires', async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await scanner()
      .scan(messageSource(specimens.cleanWithAttachment()), ctx(ac.signal))
      .catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_SCANNER_TIMEOUT')).toBe(true);
  });
});

describe('RulesScanner fingerprint', () => {
  it('is stable for equal settings (list order ignored) and changes with any setting', async () => {
    const a = await scanner({ blockedExtensions: ['exe', 'scr'] }).fingerprint();
    const b = await scanner({ blockedExtensions: ['scr', 'exe'] }).fingerprint();
    expect(a).toBe(b);
    const others = await Promise.all([
      scanner({ blockedExtensions: ['exe'] }).fingerprint(),
      scanner({ macros: 'malicious' }).fingerprint(),
      scanner({ limits: { maxExpansionRatio: 50 } }).fingerprint(),
      scanner({ allowedSha256: ['a'.repeat(64)] }).fingerprint(),
    ]);
    for (const o of others) expect(o).not.toBe(a);
    expect(a).toMatch(/^sandgate-rules\/2:[0-9a-f]{32}$/);
  });
});

describe('RulesScanner on files embedded in text and parser ambiguities', () => {
  it('a uuencoded program, a disguised one and EICAR in a text body are malicious, with the block named', async () => {
    const program = await scan(embeddedSpecimens.uuencodedProgram());
    expect(program).toMatchObject({
      kind: 'malicious',
      threats: ['Sandgate.Attachment.BlockedExtension'],
      details: { rule: 'blocked-extension', part: '1/uuencode-1' },
    });
    expect(threats(await scan(embeddedSpecimens.uuencodedDisguisedProgram()))).toEqual([
      'Sandgate.Attachment.DisguisedExecutable',
    ]);
    expect(await scan(embeddedSpecimens.uuencodedEicar())).toMatchObject({
      kind: 'malicious',
      threats: ['Sandgate.Test.EICAR'],
      details: { part: '1/uuencode-1' },
    });
  });

  it('yEnc and begin-base64 programs are malicious; a multi-part yEnc piece is suspicious, named', async () => {
    expect(threats(await scan(textMessage(yenc(fakeElf(), 'tool.pdf'))))).toEqual([
      'Sandgate.Attachment.DisguisedExecutable',
    ]);
    expect(threats(await scan(textMessage(beginBase64(fakeElf(), 'tool.pdf'))))).toEqual([
      'Sandgate.Attachment.DisguisedExecutable',
    ]);
    expect(
      await scan(textMessage(yenc(Buffer.from('just a piece'), 'a.rar', { part: 2, total: 3 }))),
    ).toMatchObject({
      kind: 'suspicious',
      threats: ['Sandgate.Mime.Undecoded'],
      details: { rule: 'mime-yenc-multipart', part: '1' },
    });
  });

  it('a NUL that hides an .exe extension, and a Content-Type name that disagrees, are malicious', async () => {
    const nul = Buffer.from(
      [
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: application/octet-stream',
        "Content-Disposition: attachment; filename*=utf-8''setup.exe%00.txt",
        '',
        'x',
        '--b--',
        '',
      ].join('\r\n'),
    );
    expect(await scan(nul)).toMatchObject({
      kind: 'malicious',
      threats: ['Sandgate.Attachment.BlockedExtension'],
    });
    const twoNames = Buffer.from(
      [
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: application/octet-stream; name="invoice.scr"',
        'Content-Disposition: attachment; filename="invoice.pdf"',
        '',
        'x',
        '--b--',
        '',
      ].join('\r\n'),
    );
    expect(threats(await scan(twoNames))).toEqual(['Sandgate.Attachment.BlockedExtension']);
  });

  it('an ambiguity alone makes the message suspicious with the ambiguity as the rule', async () => {
    const prefix = Buffer.from(
      [
        'Content-Type: multipart/mixed; boundary="AAA"',
        '',
        '--AAA',
        '',
        'x',
        '--AAAB',
        'y',
        '--AAA--',
        '',
      ].join('\r\n'),
    );
    expect(await scan(prefix)).toMatchObject({
      kind: 'suspicious',
      threats: ['Sandgate.Mime.Ambiguous'],
      details: { rule: 'mime-boundary-prefix', part: '1' },
    });
  });
});
