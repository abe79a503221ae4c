import type { Readable } from 'node:stream';
import libmime from 'libmime';
import { readHeaderFields } from '../core/header-block.js';
import { decodeHeaderField, headerBytesToText } from '../mime/header-text.js';

/**
 * Quarantined mail as operators read it: header fields decoded (RFC 2047 words in koi8-r,
 * windows-1251, UTF-8..., RFC 2231 parameters, raw 8-bit text), a preview of the text body, and
 * text made safe for a terminal. Display only: nothing here decides anything about a message.
 */

export interface DisplayHeader {
  readonly name: string;
  /** The decoded value as a mail client shows it (control characters removed). */
  readonly value: string;
  /** The value as written (unfolded; its bytes as UTF-8 where valid, else latin1). */
  readonly raw: string;
}

export interface BodyPreview {
  /** The first lines of the text body, charset decoded; an HTML-only body is turned into text, never rendered. */
  readonly text: string;
  /** More text follows the preview. */
  readonly truncated: boolean;
  /** Why there is no (full) preview: the message is larger than the limit, it could not be parsed. */
  readonly problem?: string;
}

export const PREVIEW_LINES = 20;
export const PREVIEW_CHARS = 2000;
/** An HTML body longer than this is not converted to text for the preview (CPU). */
const MAX_HTML_TO_TEXT = 1024 * 1024;

// ANSI/VT escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte ESC sequences.
const ESCAPES =
  // eslint-disable-next-line no-control-regex
  /\u001b\[[0-?]*[ -/]*[@-~]|\u009b[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|\u001b[@-Z\\-_]?/g;
// C0 and C1 controls and DEL; bidirectional overrides, embeddings and isolates (they reorder what a
// terminal shows: "invoice\u202Efdp.exe" reads as "invoiceexe.pdf").
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from a message (or a scanner's reply) made safe to print: escape sequences and control
 * characters removed, bidirectional overrides removed; tabs become spaces, and line breaks too
 * unless `keepNewlines`.
 */
export function cleanText(text: string, options: { keepNewlines?: boolean } = {}): string {
  const out = text.replace(ESCAPES, '').replace(/\t/g, ' ');
  return options.keepNewlines
    ? out.replace(/\r\n?/g, '\n').replace(CONTROLS, '')
    : out.replace(/\r\n?|\n/g, ' ').replace(CONTROLS, '');
}

/** The charset a message declares for its body (top-level Content-Type), if any. */
function declaredCharset(fields: ReadonlyArray<{ name: string; raw: Buffer }>): string | undefined {
  const ct = fields.find((f) => f.name === 'content-type');
  if (ct === undefined) return undefined;
  const value = valueBytes(ct.raw).toString('latin1');
  const charset = libmime.parseHeaderValue(value).params.charset;
  return charset !== undefined && charset !== '' ? charset : undefined;
}

/** The bytes after the field name's colon, unfolded and trimmed. */
function valueBytes(raw: Buffer): Buffer {
  const colon = raw.indexOf(0x3a);
  const text = raw.subarray(colon >= 0 ? colon + 1 : 0).toString('latin1');
  return Buffer.from(text.replace(/\r?\n[ \t]/g, ' ').trim(), 'latin1');
}

/**
 * The header fields of a message, in order, each decoded for display. Raw 8-bit values that are
 * not UTF-8 are read in the charset the message declares for its body, as mail clients do.
 */
export async function readDisplayHeaders(original: AsyncIterable<Buffer>): Promise<DisplayHeader[]> {
  const fields = await readHeaderFields(original);
  const fallback = declaredCharset(fields);
  return fields.map((f) => {
    const colon = f.raw.indexOf(0x3a);
    const name = colon > 0 ? f.raw.subarray(0, colon).toString('latin1').trim() : '';
    const bytes = colon > 0 ? valueBytes(f.raw) : Buffer.from(f.raw.toString('latin1').trim(), 'latin1');
    return {
      name: cleanText(name),
      value: cleanText(colon > 0 ? decodeHeaderField(f.name, bytes, fallback) : ''),
      raw: cleanText(headerBytesToText(bytes, fallback)),
    };
  });
}

/**
 * The first lines of the message's text body, parsed on demand with mailparser: text/plain parts
 * in their charsets, or an HTML body turned into text (never rendered). Attachments are read past,
 * not kept. A message larger than `maxBytes` (scan.maxMessageSize) is not parsed.
 */
export async function bodyPreview(
  open: () => Readable,
  size: number,
  options: { readonly maxBytes: number; readonly lines?: number; readonly chars?: number },
): Promise<BodyPreview> {
  if (size > options.maxBytes) {
    return {
      text: '',
      truncated: false,
      problem: `no preview: the message (${size} bytes) is larger than scan.maxMessageSize (${options.maxBytes})`,
    };
  }
  let text = '';
  let problem: string | undefined;
  try {
    text = await parseText(open());
  } catch (err) {
    problem = `no preview: the message could not be parsed (${err instanceof Error ? err.message : String(err)})`;
  }
  const maxLines = options.lines ?? PREVIEW_LINES;
  const maxChars = options.chars ?? PREVIEW_CHARS;
  const lines = cleanText(text, { keepNewlines: true })
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .replace(/^\n+/, '')
    .trimEnd()
    .split('\n');
  let preview = lines.slice(0, maxLines).join('\n');
  let truncated = lines.length > maxLines;
  if (preview.length > maxChars) {
    preview = `${[...preview].slice(0, maxChars).join('')}`;
    truncated = true;
  }
  return { text: preview, truncated, ...(problem !== undefined ? { problem } : {}) };
}

async function parseText(source: Readable): Promise<string> {
  // Loaded on the first preview: the relay and the helper never need it otherwise.
  const { MailParser } = await import('mailparser');
  return new Promise((resolve, reject) => {
    const parser = new MailParser({
      skipTextToHtml: true,
      skipTextLinks: true,
      skipImageLinks: true,
      checksumAlgo: false,
      maxHtmlLengthToParse: MAX_HTML_TO_TEXT,
    });
    let text = '';
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      source.destroy();
      parser.destroy();
      reject(err);
    };
    parser.on('data', (data) => {
      if (data.type === 'attachment') {
        // Read past it: the parser goes on once the attachment is released.
        data.content.on('data', () => undefined);
        data.content.on('end', () => data.release?.());
        data.content.on('error', fail);
      } else {
        text = data.text ?? '';
      }
    });
    parser.on('error', fail);
    source.on('error', fail);
    parser.on('end', () => {
      if (settled) return;
      settled = true;
      resolve(text);
    });
    source.pipe(parser);
  });
}

/** Local time with its offset from UTC, so a reader knows which zone it is in: `2026-12-04 20:39:02 +03:00`. */
export function formatLocalTime(ms: number): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, '0');
  const offset = -d.getTimezoneOffset();
  const sign = offset < 0 ? '-' : '+';
  const abs = Math.abs(offset);
  return (
    `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ` +
    `${sign}${two(Math.floor(abs / 60))}:${two(abs % 60)}`
  );
}
