import libmime from 'libmime';
import { decode as decodeCharset } from 'libmime/lib/charset.js';

/**
 * Header values as people read them: what a mail client shows for a Subject, a From name or an
 * attachment's name. For display, logs of names and the sandbox UI, never for decisions (the rules
 * engine reads the structure itself: src/mime/anomalies.ts).
 */

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Header fields whose value is `type; param=value` (RFC 2045, RFC 2183): parameters per RFC 2231. */
const PARAMETERISED = new Set(['content-type', 'content-disposition']);

/**
 * The bytes of a header value as text: UTF-8 when they are valid UTF-8 (RFC 6532 mail, or plain
 * ASCII), else in `fallbackCharset` (the charset the message declares for its body: mail clients
 * read raw 8-bit headers in it), else latin1, which keeps every byte visible.
 */
export function headerBytesToText(bytes: Buffer, fallbackCharset?: string): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    if (fallbackCharset !== undefined && fallbackCharset !== '') {
      try {
        return decodeCharset(bytes, fallbackCharset);
      } catch {
        // an unusable charset: fall through to latin1
      }
    }
    return bytes.toString('latin1');
  }
}

/**
 * The display text of an unstructured or address header value (Subject, From, To, ...): the raw
 * value (a Buffer, or a latin1 string holding its bytes as header parsers give it) decoded as
 * above, then its RFC 2047 encoded words in their charsets (koi8-r, windows-1251, UTF-8, ...),
 * adjacent words joined as RFC 2047 says, folding undone.
 */
export function decodeHeaderText(raw: Buffer | string, fallbackCharset?: string): string {
  const bytes = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
  const text = headerBytesToText(bytes, fallbackCharset).replace(/\r?\n[ \t]/g, ' ');
  try {
    return libmime.decodeWords(text);
  } catch {
    return text;
  }
}

/**
 * The display text of a Content-Type or Content-Disposition value: the type, then each parameter
 * decoded: RFC 2231 (`filename*=koi8-r''%F3...`, continuations) and RFC 2047 words inside quotes
 * (`filename="=?windows-1251?B?...?="`, what many clients write).
 */
export function decodeParameterisedText(raw: Buffer | string, fallbackCharset?: string): string {
  const text = decodeHeaderTextKeepingWords(raw, fallbackCharset);
  const parsed = libmime.parseHeaderValue(text);
  const params = Object.entries(parsed.params).map(([name, value]) => {
    let decoded = value;
    if (!parsed.decodedParams?.includes(name)) {
      try {
        decoded = libmime.decodeWords(value);
      } catch {
        // keep the value as written
      }
    }
    return `${name}="${decoded.replace(/(["\\])/g, '\\$1')}"`;
  });
  return [parsed.value, ...params].join('; ');
}

/** The display text of any header field by its (lower-case) name. */
export function decodeHeaderField(name: string, raw: Buffer | string, fallbackCharset?: string): string {
  return PARAMETERISED.has(name.toLowerCase())
    ? decodeParameterisedText(raw, fallbackCharset)
    : decodeHeaderText(raw, fallbackCharset);
}

function decodeHeaderTextKeepingWords(raw: Buffer | string, fallbackCharset?: string): string {
  const bytes = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
  return headerBytesToText(bytes, fallbackCharset).replace(/\r?\n[ \t]/g, ' ');
}

/**
 * A form of display text for case-insensitive matching: Unicode lower case (SQLite's LIKE folds
 * ASCII only), NFC, and ё as е (Russian writers often type one for the other: "счет" finds "Счёт").
 */
export function searchFold(text: string): string {
  return text.normalize('NFC').toLowerCase().replace(/ё/g, 'е');
}
