/**
 * Files hidden in the text of a message, as mail programs write them: uuencode (uuencode(1) and
 * the x-uuencode transfer encoding), begin-base64 (uuencode -m), yEnc 1.3 (single and multi-part)
 * and HTML data: URIs. The encoders are written here from the formats, not with the decoder's
 * code, so a test does not trust what it tests.
 */
import { EICAR, fakePe } from './specimens.js';

const CRLF = '\r\n';

/** uuencode(1): `begin 644 name`, lines of 45 bytes, a backtick line, `end`. */
export function uuencode(data: Buffer, name: string, mode = '644'): string {
  const lines = [`begin ${mode} ${name}`];
  const ch = (v: number) => String.fromCharCode(v === 0 ? 96 : v + 32);
  for (let i = 0; i < data.length; i += 45) {
    const slice = data.subarray(i, i + 45);
    let line = ch(slice.length);
    for (let j = 0; j < slice.length; j += 3) {
      const a = slice[j] ?? 0;
      const b = slice[j + 1] ?? 0;
      const c = slice[j + 2] ?? 0;
      line += ch(a >> 2) + ch(((a & 3) << 4) | (b >> 4)) + ch(((b & 15) << 2) | (c >> 6)) + ch(c & 63);
    }
    lines.push(line);
  }
  lines.push('`', 'end');
  return lines.join(CRLF);
}

/** uuencode -m: `begin-base64 644 name`, base64 lines, `====`. */
export function beginBase64(data: Buffer, name: string): string {
  const b64 = data.toString('base64').match(/.{1,60}/g) ?? [];
  return [`begin-base64 644 ${name}`, ...b64, '===='].join(CRLF);
}

/** yEnc 1.3: bytes + 42, NUL LF CR and = escaped as =(c+64); `=ybegin` ... `=yend`. */
export function yenc(data: Buffer, name: string, multipart?: { part: number; total: number }): Buffer {
  const body: number[] = [];
  let col = 0;
  for (const byte of data) {
    const c = (byte + 42) & 0xff;
    if (c === 0 || c === 10 || c === 13 || c === 61) {
      body.push(61, (c + 64) & 0xff);
      col += 2;
    } else {
      body.push(c);
      col += 1;
    }
    if (col >= 128) {
      body.push(13, 10);
      col = 0;
    }
  }
  const head =
    multipart === undefined
      ? `=ybegin line=128 size=${data.length} name=${name}${CRLF}`
      : `=ybegin part=${multipart.part} total=${multipart.total} line=128 size=${data.length * multipart.total} name=${name}${CRLF}` +
        `=ypart begin=1 end=${data.length}${CRLF}`;
  return Buffer.concat([
    Buffer.from(head, 'latin1'),
    Buffer.from(body),
    Buffer.from(`${CRLF}=yend size=${data.length}${CRLF}`, 'latin1'),
  ]);
}

/** A single-part message with the given header lines and a text body (bytes kept as they are). */
export function textMessage(
  body: string | Buffer,
  contentType = 'text/plain',
  extraHeaders: string[] = [],
): Buffer {
  const head = [
    'From: Sender <sender@example.org>',
    'To: Rcpt <rcpt@example.net>',
    'Subject: the file you asked for',
    'Date: Tue, 02 Jan 2024 10:00:00 +0000',
    'Message-ID: <embedded@example.org>',
    'MIME-Version: 1.0',
    `Content-Type: ${contentType}`,
    ...extraHeaders,
  ].join(CRLF);
  return Buffer.concat([
    Buffer.from(`${head}${CRLF}${CRLF}`, 'latin1'),
    Buffer.isBuffer(body) ? body : Buffer.from(body, 'latin1'),
    Buffer.from(CRLF),
  ]);
}

/** The adversarial run's specimens: a program and EICAR uuencoded in a plain-text body. */
export const embeddedSpecimens = {
  uuencodedProgram: () =>
    textMessage(
      `Hello,${CRLF}the installer is below.${CRLF}${CRLF}${uuencode(fakePe(), 'setup.exe')}${CRLF}Bye`,
    ),
  /** The program under a harmless name: only the disguised-executable rule can see it. */
  uuencodedDisguisedProgram: () => textMessage(`Photos:${CRLF}${uuencode(fakePe(), 'holiday.jpg')}${CRLF}`),
  uuencodedEicar: () => textMessage(`Test file:${CRLF}${uuencode(EICAR, 'readme.txt')}${CRLF}`),
} as const;
