/**
 * Property tests of the MIME walker, the rules engine on top of it, and the zip reader, on
 * generated hostile input: messages assembled from the pieces attackers use (boundaries and
 * near-boundaries, duplicate fields, odd transfer encodings, uuencode / yEnc / data: blocks,
 * zips, gzips, NULs) and random mutations of well-formed messages. Properties: no crash, no hang
 * past the deadline, every walk ends in a summary or a SandgateError, every scan in a finding,
 * no spool file left. fast-check prints the seed of a failing run; replay it with
 * `{ seed, path }` in the fc.assert options.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rulesSchema } from '../../../src/config/scanners.js';
import { isSandgateError } from '../../../src/core/errors.js';
import { silentLogger } from '../../../src/core/logger.js';
import { walkMessage } from '../../../src/mime/walker.js';
import { readZipDirectory, ZipFormatError } from '../../../src/mime/zip.js';
import { RulesScanner } from '../../../src/sandbox/rules/rules-scanner.js';
import { uuencode, yenc } from '../../support/embedded-specimens.js';
import { buildMessage, chunkedSource, EICAR, fakePe, markEncrypted, zip } from '../../support/specimens.js';

const LIMITS = {
  maxDepth: 4,
  maxParts: 200,
  maxArchiveMembers: 200,
  maxExpansionRatio: 100,
  ratioMinBytes: 64 * 1024,
  maxTotalBytes: 16 * 1024 * 1024,
};
/** Each case runs under this deadline; a walk must settle by then (plus scheduling slack). */
const DEADLINE_MS = 3000;
const SLACK_MS = 1500;
/** The whole property run stops here, whatever numRuns says, so the suite's time stays bounded. */
const TIME_LIMIT_MS = 25_000;

let spoolDir: string;
beforeAll(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-prop-'));
});
afterAll(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

const CRLF = '\r\n';
const BOUNDARIES = ['AAA', 'AAAB', 'b1', '----=_x', 'a b'];

const headerLine = fc.oneof(
  fc.constantFrom(
    'Content-Type: text/plain',
    'Content-Type: text/html',
    'Content-Type: application/octet-stream; name="a.exe"',
    'Content-Type: message/rfc822',
    'Content-Type: application/zip',
    'Content-Type: application/mac-binhex40',
    'Content-Transfer-Encoding: base64',
    'Content-Transfer-Encoding: quoted-printable',
    'Content-Transfer-Encoding: x-uuencode',
    'Content-Transfer-Encoding: x-gzip64',
    'Content-Transfer-Encoding: "base64"',
    'Content-Disposition: attachment; filename="invoice.pdf"',
    "Content-Disposition: attachment; filename*=utf-8''setup.exe%00.txt",
    'Content-Disposition: attachment; filename*0="a"; filename*1=".exe"',
    'Subject: =?koi8-r?B?88nF1A==?=',
    'X-Sandgate-Verdict: clean',
    ' folded continuation',
  ),
  fc.constantFrom(...BOUNDARIES).map((b) => `Content-Type: multipart/mixed; boundary="${b}"`),
  fc.constantFrom(...BOUNDARIES).map((b) => `Content-Type: multipart/alternative; boundary=${b}; boundary=Z`),
  fc.string({ maxLength: 80 }).map((s) => `X-Junk: ${s}`),
);

const bodyLine = fc.oneof(
  fc
    .constantFrom(...BOUNDARIES)
    .chain((b) => fc.constantFrom(`--${b}`, `--${b}--`, `--${b}X`, `--${b} `, `--${b}--trailer`)),
  fc.constantFrom(
    '',
    'begin 644 setup.exe',
    'begin-base64 644 x.bin',
    "M86)C9&5F9VAI:FML;6YO<'%R<W1U=G=X>7I!0D-$149'2$E*2TQ-3D]0",
    '`',
    'end',
    '====',
    '=ybegin line=128 size=10 name=a.exe',
    '=ybegin part=1 total=2 line=128 size=10 name=b.rar',
    '=ypart begin=1 end=10',
    '=yend size=10',
    '(This file must be converted with BinHex 4.0)',
    '<img src="data:image/png;base64,TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA">',
    '<a href="data:;base64,">',
    'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAA',
    '=E9=\x00=',
  ),
  fc.string({ maxLength: 120 }),
  fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u).toString('latin1')),
);

/** A message assembled from hostile pieces: header blocks and bodies, nested at random. */
const assembled = fc
  .array(fc.tuple(fc.array(headerLine, { maxLength: 6 }), fc.array(bodyLine, { maxLength: 12 })), {
    minLength: 1,
    maxLength: 6,
  })
  .map((blocks) =>
    Buffer.from(blocks.map(([h, b]) => `${h.join(CRLF)}${CRLF}${CRLF}${b.join(CRLF)}`).join(CRLF), 'latin1'),
  );

/** Well-formed messages with the content attackers hide, to mutate. */
const SEEDS: readonly Buffer[] = [
  buildMessage({
    attachments: [{ filename: 'docs.zip', content: zip({ 'eicar.txt': EICAR, 'a.exe': fakePe() }) }],
  }),
  buildMessage({ attachments: [{ filename: 'x.gz', content: gzipSync(zip({ 'in.exe': fakePe() })) }] }),
  buildMessage({ text: `see below${CRLF}${uuencode(fakePe(), 'setup.exe')}${CRLF}` }),
  buildMessage({ text: yenc(Buffer.from('payload bytes'), 'a.exe') }),
  buildMessage({
    attachments: [{ filename: 's.zip', content: markEncrypted(zip({ 'r.txt': Buffer.from('x') }, 0)) }],
  }),
  buildMessage({
    attachments: [
      {
        filename: 'fwd.eml',
        contentType: 'message/rfc822',
        content: buildMessage({ text: 'inner' }),
        encoding: '7bit',
      },
    ],
  }),
];

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(seed: Buffer, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(seed);
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % b.length;
    switch (m.kind) {
      case 'flip':
        if (b.length > 0) b[at] = m.byte;
        break;
      case 'cut':
        b = b.subarray(0, at);
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
        break;
    }
  }
  return b;
}

const mutated = fc
  .tuple(fc.nat({ max: SEEDS.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 8 }))
  .map(([i, ms]) => mutate(SEEDS[i] as Buffer, ms));

const hostile = fc.tuple(fc.oneof(assembled, mutated), fc.constantFrom(1, 7, 64, 4096, 1 << 20));

/** Errors that mean a bug in our code, whatever the input (a parser's complaint is a plain Error). */
function isProgrammingError(err: unknown): boolean {
  return err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError;
}

async function settlesInTime<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const started = Date.now();
  const signal = AbortSignal.timeout(DEADLINE_MS);
  try {
    return await work(signal);
  } finally {
    expect(Date.now() - started).toBeLessThan(DEADLINE_MS + SLACK_MS);
  }
}

describe('MIME walker and rules engine on hostile input (property)', () => {
  it('every walk ends in a summary or a SandgateError, in time, and leaves no spool file', async () => {
    await fc.assert(
      fc.asyncProperty(hostile, async ([bytes, chunk]) => {
        await settlesInTime(async (signal) => {
          try {
            const summary = await walkMessage(
              chunkedSource(bytes, chunk),
              { limits: LIMITS, spoolDir, memoryThreshold: 256, signal },
              async (part) => {
                // Read every part, as a scanner does.
                await part.scan(() => undefined);
              },
            );
            expect(summary.parts).toBeGreaterThanOrEqual(0);
          } catch (err) {
            expect(isSandgateError(err), String(err)).toBe(true);
            if (isSandgateError(err)) {
              expect(['ERR_MESSAGE_MALFORMED', 'ERR_ABORTED']).toContain(err.code);
              // Malformed input, not a bug of ours behind the same code.
              expect(isProgrammingError(err.cause), String(err.cause)).toBe(false);
            }
          }
        });
        expect(readdirSync(spoolDir)).toEqual([]);
      }),
      { numRuns: 400, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
  }, 60_000);

  it('every rules scan ends in a finding (a verdict or a failure), never a throw', async () => {
    const rules = new RulesScanner(rulesSchema.parse({ limits: LIMITS, memorySpoolThreshold: 256 }), {
      spoolDir,
    });
    await fc.assert(
      fc.asyncProperty(hostile, async ([bytes, chunk]) => {
        const finding = await settlesInTime((signal) =>
          rules.scan(chunkedSource(bytes, chunk), {
            signal,
            deadline: Date.now() + DEADLINE_MS,
            log: silentLogger,
            now: Date.now,
            memo: { run: (_k, compute) => compute() },
          }),
        );
        expect(['clean', 'suspicious', 'malicious', 'failed']).toContain(finding.kind);
        expect(readdirSync(spoolDir)).toEqual([]);
      }),
      { numRuns: 300, interruptAfterTimeLimit: TIME_LIMIT_MS },
    );
  }, 60_000);
});

describe('zip reader on hostile input (property)', () => {
  const archives = [
    zip({ 'a.txt': Buffer.from('hello'), 'b/c.exe': fakePe() }),
    zip({ x: Buffer.alloc(1000) }, 0),
  ];
  const source = (b: Buffer) => ({
    size: b.length,
    read: (start: number, length: number) =>
      Promise.resolve(b.subarray(Math.max(0, start), Math.max(0, Math.min(b.length, start + length)))),
  });

  it('lists a directory or throws ZipFormatError, for random and mutated archives', async () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
      fc
        .tuple(fc.nat({ max: archives.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 6 }))
        .map(([i, ms]) => mutate(archives[i] as Buffer, ms)),
    );
    await fc.assert(
      fc.asyncProperty(bytes, fc.integer({ min: 0, max: 10 }), async (b, max) => {
        try {
          const dir = await readZipDirectory(source(b), max);
          expect(dir.entries.length).toBeLessThanOrEqual(Math.max(max, dir.declaredEntries));
        } catch (err) {
          expect(err, String(err)).toBeInstanceOf(ZipFormatError);
        }
      }),
      { numRuns: 2000, interruptAfterTimeLimit: 10_000 },
    );
  });
});
