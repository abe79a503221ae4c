/**
 * Mail as PT Sandbox's and CommuniGate's users in Russia send it: a koi8-r Subject, a windows-1251
 * From name, an 8-bit koi8-r body and an attachment with an RFC 2231 koi8-r file name. The bytes
 * are made here with the platform's own charset tables (TextDecoder, ICU), not with the library
 * under test (libmime, iconv-lite).
 */
import { base64Lines } from './specimens.js';

/** Encodes text in a single-byte charset, using TextDecoder's table for it. */
export function encodeSingleByte(charset: string, text: string): Buffer {
  const decoder = new TextDecoder(charset);
  const table = new Map<string, number>();
  for (let b = 0; b < 256; b++) table.set(decoder.decode(Uint8Array.of(b)), b);
  return Buffer.from(
    [...text].map((c) => {
      const b = table.get(c);
      if (b === undefined) throw new Error(`${charset} has no ${c}`);
      return b;
    }),
  );
}

export const SUBJECT = 'Счёт на оплату за март';
export const FROM_NAME = 'Бухгалтерия ООО «Ромашка»';
export const FROM_ADDRESS = 'buh@romashka.example';
export const BODY_LINES = [
  'Добрый день!',
  'Счёт во вложении, оплатите до пятницы.',
  'С уважением, бухгалтерия',
];
export const ATTACHMENT_NAME = 'Счёт.com';

export interface CyrillicMailOptions {
  /** The attachment's bytes (default: a harmless text). */
  readonly attachment?: Buffer;
  /** Put this between the body lines (a terminal escape, a control character...). */
  readonly bodyExtra?: string;
  readonly subject?: string;
}

export function cyrillicMail(options: CyrillicMailOptions = {}): Buffer {
  const subject = encodeSingleByte('koi8-r', options.subject ?? SUBJECT).toString('base64');
  const from = encodeSingleByte('windows-1251', FROM_NAME).toString('base64');
  const lines =
    options.bodyExtra === undefined
      ? BODY_LINES
      : [BODY_LINES[0]!, options.bodyExtra, ...BODY_LINES.slice(1)];
  const body = encodeSingleByte('koi8-r', lines.join('\r\n'));
  const name = [...encodeSingleByte('koi8-r', ATTACHMENT_NAME)]
    .map((b) =>
      b < 0x80 && /[A-Za-z0-9.]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
  const head = [
    `From: =?windows-1251?B?${from}?= <${FROM_ADDRESS}>`,
    'To: rcpt@example.net',
    `Subject: =?koi8-r?B?${subject}?=`,
    'Date: Tue, 02 Jan 2024 10:00:00 +0300',
    'Message-ID: <cyrillic-1@romashka.example>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="=_b1"',
    '',
    '--=_b1',
    'Content-Type: text/plain; charset=koi8-r',
    'Content-Transfer-Encoding: 8bit',
    '',
  ].join('\r\n');
  const tail = [
    '',
    '--=_b1',
    'Content-Type: application/octet-stream',
    `Content-Disposition: attachment; filename*=koi8-r''${name}`,
    'Content-Transfer-Encoding: base64',
    '',
    base64Lines(options.attachment ?? Buffer.from('an in-house tool\n')),
    '--=_b1--',
    '',
  ].join('\r\n');
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body, Buffer.from(tail, 'latin1')]);
}
