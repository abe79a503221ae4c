/**
 * Test specimens generated in code (no binary fixtures in the repository): messages with the
 * EICAR test string in every encoding and container, dangerous names, encrypted and bomb
 * archives, macro documents, clean messages, and a big-message generator that streams without
 * holding the bytes. Other scanners' tests reuse these.
 */
import { deflateRawSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { zipSync, type Zippable } from 'fflate';
import { BufferMessage } from '../../src/mime/spool.js';
import type { Envelope, MessageSource } from '../../src/core/message.js';

/** The EICAR test string, assembled from base64 so this file is not itself a test virus. */
export const EICAR = Buffer.from(
  'WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=',
  'base64',
);

export const TEST_ENVELOPE: Envelope = {
  sender: 'sender@example.org',
  recipients: ['rcpt@example.net'],
  clientAddress: '192.0.2.10',
  heloName: 'mx.example.org',
  frontEnd: 'cli',
};

export type TransferEncoding = 'base64' | 'quoted-printable' | '7bit';

export interface Attachment {
  readonly filename?: string;
  readonly contentType?: string;
  readonly content: Buffer;
  readonly encoding?: TransferEncoding;
  readonly disposition?: 'attachment' | 'inline';
}

export interface MessageSpec {
  readonly subject?: string;
  readonly text?: string | Buffer;
  readonly textEncoding?: TransferEncoding;
  readonly attachments?: readonly Attachment[];
}

const CRLF = '\r\n';

export function base64Lines(buf: Buffer): string {
  return (buf.toString('base64').match(/.{1,76}/g) ?? []).join(CRLF);
}

/** Quoted-printable, written here (not with libqp) so tests do not trust the decoder's own library. */
export function qpEncode(buf: Buffer): string {
  let line = '';
  const lines: string[] = [];
  for (const b of buf) {
    const safe = (b >= 33 && b <= 126 && b !== 61) || b === 32;
    const tok = safe ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    if (line.length + tok.length > 75) {
      lines.push(`${line}=`);
      line = '';
    }
    line += tok;
  }
  lines.push(line);
  return lines.join(CRLF);
}

function encodeBody(content: Buffer, encoding: TransferEncoding): string {
  switch (encoding) {
    case 'base64':
      return base64Lines(content);
    case 'quoted-printable':
      return qpEncode(content);
    case '7bit':
      return content.toString('latin1');
  }
}

/** Builds a MIME message: a text body and optional attachments (multipart/mixed when any). */
export function buildMessage(spec: MessageSpec = {}): Buffer {
  const text = Buffer.isBuffer(spec.text)
    ? spec.text
    : Buffer.from(spec.text ?? 'Hello,\r\nthe report is attached.\r\n');
  const textEnc = spec.textEncoding ?? '7bit';
  const head = [
    'From: Sender <sender@example.org>',
    'To: Rcpt <rcpt@example.net>',
    `Subject: ${spec.subject ?? 'specimen'}`,
    'Date: Tue, 02 Jan 2024 10:00:00 +0000',
    'Message-ID: <specimen@example.org>',
    'MIME-Version: 1.0',
  ];
  const attachments = spec.attachments ?? [];
  if (attachments.length === 0) {
    head.push('Content-Type: text/plain; charset=utf-8', `Content-Transfer-Encoding: ${textEnc}`);
    return Buffer.from(`${head.join(CRLF)}${CRLF}${CRLF}${encodeBody(text, textEnc)}${CRLF}`, 'latin1');
  }
  const boundary = '----=_sandgate_specimen_boundary';
  head.push(`Content-Type: multipart/mixed; boundary="${boundary}"`);
  const parts = [
    [
      `Content-Type: text/plain; charset=utf-8`,
      `Content-Transfer-Encoding: ${textEnc}`,
      '',
      encodeBody(text, textEnc),
    ].join(CRLF),
  ];
  for (const a of attachments) {
    const enc = a.encoding ?? 'base64';
    const type = a.contentType ?? 'application/octet-stream';
    const lines = [
      `Content-Type: ${type}${a.filename !== undefined ? `; name="${a.filename}"` : ''}`,
      `Content-Transfer-Encoding: ${enc}`,
    ];
    if (a.filename !== undefined || a.disposition !== undefined) {
      lines.push(
        `Content-Disposition: ${a.disposition ?? 'attachment'}${a.filename !== undefined ? `; filename="${a.filename}"` : ''}`,
      );
    }
    lines.push('', encodeBody(a.content, enc));
    parts.push(lines.join(CRLF));
  }
  const body = parts.map((p) => `--${boundary}${CRLF}${p}${CRLF}`).join('') + `--${boundary}--${CRLF}`;
  return Buffer.from(`${head.join(CRLF)}${CRLF}${CRLF}This is a multi-part message.${CRLF}${body}`, 'latin1');
}

let counter = 0;
export function messageSource(bytes: Buffer, msgId = `spec${++counter}`): MessageSource {
  return new BufferMessage(msgId, TEST_ENVELOPE, bytes);
}

/** A MessageSource whose open() yields the bytes in small pieces (seams everywhere). */
export function chunkedSource(bytes: Buffer, chunkSize: number, msgId = `chunk${++counter}`): MessageSource {
  return {
    msgId,
    envelope: TEST_ENVELOPE,
    size: bytes.length,
    open: () =>
      Readable.from(
        (function* () {
          for (let i = 0; i < bytes.length; i += chunkSize) yield bytes.subarray(i, i + chunkSize);
        })(),
        { objectMode: false },
      ),
  };
}

export function zip(files: Record<string, Buffer>, level: 0 | 6 | 9 = 6): Buffer {
  const z: Zippable = {};
  for (const [name, content] of Object.entries(files)) z[name] = [new Uint8Array(content), { level }];
  return Buffer.from(zipSync(z));
}

/** Sets general purpose bit 0 (encrypted) in every local and central header of a zip. */
export function markEncrypted(archive: Buffer): Buffer {
  const out = Buffer.from(archive);
  for (let i = 0; i + 4 <= out.length; i++) {
    const sig = out.readUInt32LE(i);
    if (sig === 0x04034b50) out.writeUInt16LE(out.readUInt16LE(i + 6) | 1, i + 6);
    else if (sig === 0x02014b50) out.writeUInt16LE(out.readUInt16LE(i + 8) | 1, i + 8);
  }
  return out;
}

/** A minimal PE: MZ header, e_lfanew = 0x80, "PE\0\0" there. */
export function fakePe(): Buffer {
  const b = Buffer.alloc(512);
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(0x80, 60);
  b.write('PE\0\0', 0x80, 'latin1');
  return b;
}

export function fakeElf(): Buffer {
  const b = Buffer.alloc(128);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(b);
  return b;
}

/** An OOXML macro document (.docm): a zip with word/vbaProject.bin. */
export function docm(): Buffer {
  return zip({
    '[Content_Types].xml': Buffer.from(
      '<?xml version="1.0"?><Types><Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/></Types>',
    ),
    'word/document.xml': Buffer.from('<w:document><w:body><w:p>Invoice</w:p></w:body></w:document>'),
    'word/vbaProject.bin': Buffer.concat([
      Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]),
      Buffer.alloc(504),
    ]),
  });
}

/** A clean OOXML document (.docx): no vbaProject.bin. */
export function docx(): Buffer {
  return zip({
    '[Content_Types].xml': Buffer.from('<?xml version="1.0"?><Types/>'),
    'word/document.xml': Buffer.from('<w:document><w:body><w:p>Minutes</w:p></w:body></w:document>'),
  });
}

/** An OLE2 compound file (.doc) whose directory names a _VBA_PROJECT stream, past the first 4 KiB. */
export function oleDocWithMacro(): Buffer {
  const b = Buffer.alloc(12 * 1024);
  Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]).copy(b);
  Buffer.from('_VBA_PROJECT', 'utf16le').copy(b, 8 * 1024 + 2);
  return b;
}

export function oleDocClean(): Buffer {
  const b = Buffer.alloc(12 * 1024);
  Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]).copy(b);
  Buffer.from('WordDocument', 'utf16le').copy(b, 8 * 1024 + 2);
  return b;
}

/** A zip whose member expands far beyond the ratio limit (`mib` MiB of zeros, ~1000:1). */
export function ratioBomb(mib = 8): Buffer {
  return zip({ 'zeros.bin': Buffer.alloc(mib * 1024 * 1024) }, 9);
}

/** A zip with `n` tiny members. */
export function manyMembers(n: number): Buffer {
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < n; i++) files[`f${i}.txt`] = Buffer.from(`member ${i}\n`);
  return zip(files);
}

/** Zips nested `levels` deep around a text file. */
export function nestedZips(
  levels: number,
  inner: Buffer = Buffer.from('deep\n'),
  innerName = 'deep.txt',
): Buffer {
  let content = zip({ [innerName]: inner });
  for (let i = 1; i < levels; i++) content = zip({ [`level${i}.zip`]: content });
  return content;
}

/** A multipart message whose part header is larger than the MIME parser accepts (2 MB field). */
export function oversizedPartHeader(): Buffer {
  return Buffer.from(
    [
      'Content-Type: multipart/mixed; boundary=b',
      '',
      '--b',
      `X-Long: ${'a'.repeat(2 * 1024 * 1024)}`,
      '',
      'x',
      '--b--',
      '',
    ].join('\r\n'),
  );
}

/** Every named specimen message, as raw bytes. */
export const specimens = {
  eicarPlain: () =>
    buildMessage({ text: Buffer.concat([Buffer.from('Test:\r\n'), EICAR, Buffer.from('\r\n')]) }),
  eicarBase64: () =>
    buildMessage({ attachments: [{ filename: 'eicar.txt', content: EICAR, encoding: 'base64' }] }),
  eicarQuotedPrintable: () =>
    buildMessage({
      attachments: [
        { filename: 'eicar.txt', contentType: 'text/plain', content: EICAR, encoding: 'quoted-printable' },
      ],
    }),
  eicarZip: () =>
    buildMessage({
      attachments: [
        { filename: 'docs.zip', contentType: 'application/zip', content: zip({ 'eicar.txt': EICAR }) },
      ],
    }),
  eicarNestedZip: () =>
    buildMessage({
      attachments: [
        {
          filename: 'outer.zip',
          contentType: 'application/zip',
          content: zip({ 'inner.zip': zip({ 'eicar.txt': EICAR }) }),
        },
      ],
    }),
  renamedPdfExe: () =>
    buildMessage({
      attachments: [{ filename: 'invoice.pdf.exe', content: Buffer.from('not really a program') }],
    }),
  blockedExtension: () =>
    buildMessage({ attachments: [{ filename: 'setup.scr', content: Buffer.from('screensaver') }] }),
  disguisedExecutable: () =>
    buildMessage({
      attachments: [{ filename: 'report.pdf', contentType: 'application/pdf', content: fakePe() }],
    }),
  encryptedZip: () =>
    buildMessage({
      attachments: [
        {
          filename: 'secret.zip',
          contentType: 'application/zip',
          content: markEncrypted(zip({ 'report.txt': Buffer.from('quarterly numbers\n') }, 0)),
        },
      ],
    }),
  zipBomb: () =>
    buildMessage({
      attachments: [{ filename: 'bomb.zip', contentType: 'application/zip', content: ratioBomb() }],
    }),
  macroDocm: () =>
    buildMessage({
      attachments: [
        {
          filename: 'invoice.docm',
          contentType: 'application/vnd.ms-word.document.macroEnabled.12',
          content: docm(),
        },
      ],
    }),
  macroDoc: () =>
    buildMessage({
      attachments: [
        { filename: 'invoice.doc', contentType: 'application/msword', content: oleDocWithMacro() },
      ],
    }),
  cleanText: () => buildMessage({ text: 'Hello,\r\nsee you on Monday.\r\n' }),
  cleanWithAttachment: () =>
    buildMessage({
      attachments: [
        {
          filename: 'notes.txt',
          contentType: 'text/plain',
          content: Buffer.from('Agenda:\n1. budget\n2. hiring\n'),
          encoding: 'quoted-printable',
        },
        { filename: 'minutes.docx', content: docx() },
      ],
    }),
} as const;

export type SpecimenName = keyof typeof specimens;

export interface BigMessageOptions {
  /** 'text': one text/plain body of about `bytes`; 'attachment': a base64 attachment of about `bytes` decoded. */
  readonly kind: 'text' | 'attachment';
  readonly bytes: number;
}

/**
 * A message of about `bytes` that is generated as it is read: open() streams it in 64 KiB
 * pieces and never holds more than one piece. size is exact.
 */
export function bigMessage(options: BigMessageOptions, msgId = `big${++counter}`): MessageSource {
  const boundary = 'big_message_boundary';
  const head = Buffer.from(
    [
      'From: sender@example.org',
      'To: rcpt@example.net',
      'Subject: big',
      'MIME-Version: 1.0',
      options.kind === 'text'
        ? 'Content-Type: text/plain; charset=us-ascii'
        : `Content-Type: multipart/mixed; boundary="${boundary}"`,
      '',
      options.kind === 'text'
        ? ''
        : [
            `--${boundary}`,
            'Content-Type: text/plain',
            '',
            'Big file attached.',
            `--${boundary}`,
            'Content-Type: application/octet-stream; name="big.bin"',
            'Content-Transfer-Encoding: base64',
            'Content-Disposition: attachment; filename="big.bin"',
            '',
            '',
          ].join(CRLF),
    ].join(CRLF),
    'latin1',
  );
  const tail = Buffer.from(options.kind === 'text' ? CRLF : `${CRLF}--${boundary}--${CRLF}`, 'latin1');
  // One piece: 'text' is 840 lines of 78 bytes; 'attachment' is 57*864 bytes as 864 base64 lines.
  const piece = (i: number): Buffer => {
    if (options.kind === 'text') {
      const line =
        `line ${String(i).padStart(10, '0')} the quick brown fox jumps over the lazy dog 0123456789\r\n`.slice(
          0,
          76,
        );
      return Buffer.from(`${line}\r\n`.repeat(840), 'latin1');
    }
    const raw = Buffer.alloc(57 * 864);
    for (let o = 0; o < raw.length; o += 4) raw.writeUInt32LE((Math.imul(i + o, 2654435761) ^ o) >>> 0, o);
    return Buffer.from(`${base64Lines(raw)}${CRLF}`, 'latin1');
  };
  const pieceLen = piece(0).length;
  const pieceDecoded = options.kind === 'text' ? pieceLen : 57 * 864;
  const pieces = Math.max(1, Math.ceil(options.bytes / pieceDecoded));
  return {
    msgId,
    envelope: TEST_ENVELOPE,
    size: head.length + pieces * pieceLen + tail.length,
    open: () =>
      Readable.from(
        (function* () {
          yield head;
          for (let i = 0; i < pieces; i++) yield piece(i);
          yield tail;
        })(),
        { objectMode: false },
      ),
  };
}

/** Compresses with raw deflate (for tests that build archives by hand). */
export function deflate(buf: Buffer): Buffer {
  return deflateRawSync(buf);
}
