/**
 * The CommuniGate Pro Helper protocol, pure: splitting stdin into lines, parsing command lines,
 * decoding and encoding CGP strings, formatting reply lines. No I/O here.
 * See docs/communigate.md and the contract in the project's reference notes.
 */

import { printable } from '../core/text.js';

/** CommuniGate refuses response lines longer than this (bytes, end of line included). */
export const MAX_REPLY_BYTES = 4096;

/** Sequence numbers longer than this are not believed to come from CommuniGate. */
const MAX_SEQ_DIGITS = 64;

// ---------------------------------------------------------------------------------------------
// Input lines

/** Bytes kept of the start of an over-long line: room for blanks and a sequence number. */
export const TOO_LONG_PREFIX_BYTES = 128;

/**
 * One line from the server: its text (end of line and a trailing CR removed), or a line that was
 * too long, with its size and its first TOO_LONG_PREFIX_BYTES bytes (to find its sequence number).
 */
export type InputLine =
  | { readonly kind: 'line'; readonly text: string }
  | { readonly kind: 'too-long'; readonly bytes: number; readonly prefix: string };

/**
 * Splits a byte stream into lines at LF, strips a trailing CR, and never buffers more than
 * `maxLength` bytes of one line: a longer line is reported once as 'too-long' (with a bounded
 * prefix) and skipped up to its end of line.
 */
export class LineReader {
  private parts: Buffer[] = [];
  private held = 0;
  /** Bytes of the current over-long line, counted while it is being skipped. */
  private skipping = -1;
  /** The start of the over-long line being skipped. */
  private prefix = '';

  constructor(private readonly maxLength: number) {}

  push(chunk: Buffer): InputLine[] {
    const out: InputLine[] = [];
    let start = 0;
    while (start < chunk.length) {
      const lf = chunk.indexOf(0x0a, start);
      const end = lf === -1 ? chunk.length : lf;
      this.take(chunk.subarray(start, end));
      if (lf === -1) break;
      this.finishLine(out);
      start = lf + 1;
    }
    return out;
  }

  /** End of input: a last line without its end of line still counts. */
  end(): InputLine[] {
    const out: InputLine[] = [];
    if (this.held > 0 || this.skipping >= 0) this.finishLine(out);
    return out;
  }

  private take(piece: Buffer): void {
    if (piece.length === 0) return;
    if (this.skipping >= 0) {
      this.skipping += piece.length;
      return;
    }
    // +1 leaves room for a CR that belongs to the end of line.
    if (this.held + piece.length > this.maxLength + 1) {
      this.skipping = this.held + piece.length;
      this.prefix = prefixOf(Buffer.concat([...this.parts, piece.subarray(0, TOO_LONG_PREFIX_BYTES)]));
      this.parts = [];
      this.held = 0;
      return;
    }
    this.parts.push(Buffer.from(piece));
    this.held += piece.length;
  }

  private finishLine(out: InputLine[]): void {
    if (this.skipping >= 0) {
      out.push({ kind: 'too-long', bytes: this.skipping, prefix: this.prefix });
      this.skipping = -1;
      this.prefix = '';
      return;
    }
    let line = this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts, this.held);
    this.parts = [];
    this.held = 0;
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    if (line.length > this.maxLength) {
      out.push({ kind: 'too-long', bytes: line.length, prefix: prefixOf(line) });
      return;
    }
    out.push({ kind: 'line', text: line.toString('utf8') });
  }
}

function prefixOf(line: Buffer): string {
  return line.subarray(0, TOO_LONG_PREFIX_BYTES).toString('latin1');
}

/**
 * The sequence number an over-long line starts with (after blanks): digits, at most
 * MAX_SEQ_DIGITS, then a blank. Undefined when there is none: such a line is junk.
 */
export function sequenceOfTooLongLine(prefix: string): string | undefined {
  const m = /^[ \t]*([0-9]+)[ \t]/.exec(prefix);
  const seq = m?.[1];
  return seq !== undefined && seq.length <= MAX_SEQ_DIGITS ? seq : undefined;
}

// ---------------------------------------------------------------------------------------------
// Commands

export type Command =
  | { readonly kind: 'INTF'; readonly seq: string; readonly version: number | undefined }
  /** `path` is undefined when the argument could not be parsed (answered with the tempfail reply). */
  | { readonly kind: 'FILE'; readonly seq: string; readonly path: string | undefined }
  | { readonly kind: 'QUIT'; readonly seq: string }
  | { readonly kind: 'KEY'; readonly seq: string }
  | { readonly kind: 'unknown'; readonly seq: string; readonly command: string };

export type ParsedLine =
  | { readonly ok: true; readonly command: Command }
  | { readonly ok: false; readonly reason: 'empty' | 'no-sequence' };

const SEQ = /^[0-9]+$/;

/** Parses one command line from the server. The sequence token is kept byte for byte. */
export function parseCommandLine(text: string): ParsedLine {
  const trimmed = text.replace(/^[ \t]+/, '');
  if (trimmed.trim() === '') return { ok: false, reason: 'empty' };
  const seqEnd = firstBlank(trimmed);
  const seq = trimmed.slice(0, seqEnd);
  if (!SEQ.test(seq) || seq.length > MAX_SEQ_DIGITS) return { ok: false, reason: 'no-sequence' };

  const rest = trimmed.slice(seqEnd).replace(/^[ \t]+/, '');
  const cmdEnd = firstBlank(rest);
  const word = rest.slice(0, cmdEnd);
  const args = rest.slice(cmdEnd).replace(/^[ \t]+/, '');

  switch (word.toUpperCase()) {
    case 'INTF': {
      const v = /^[0-9]{1,9}(?=[ \t]|$)/.exec(args);
      return { ok: true, command: { kind: 'INTF', seq, version: v ? Number(v[0]) : undefined } };
    }
    case 'FILE':
      return { ok: true, command: { kind: 'FILE', seq, path: parseFileArgument(args) } };
    case 'QUIT':
      return { ok: true, command: { kind: 'QUIT', seq } };
    case 'KEY':
      return { ok: true, command: { kind: 'KEY', seq } };
    default:
      return { ok: true, command: { kind: 'unknown', seq, command: word } };
  }
}

function firstBlank(s: string): number {
  const m = /[ \t]/.exec(s);
  return m ? m.index : s.length;
}

/**
 * The FILE argument: a quoted CGP string, or else the first token. Further tokens are ignored.
 * Undefined when there is no usable path (missing, bad quoting, NUL).
 */
export function parseFileArgument(args: string): string | undefined {
  let path: string | undefined;
  if (args.startsWith('"')) {
    const decoded = decodeQuoted(args, 0);
    if (decoded === undefined) return undefined;
    if (decoded.end < args.length && !/^[ \t]/.test(args.slice(decoded.end))) return undefined;
    path = decoded.value;
  } else {
    path = args.slice(0, firstBlank(args));
  }
  if (path === '' || path.includes('\0')) return undefined;
  return path;
}

// ---------------------------------------------------------------------------------------------
// CGP strings

/**
 * Decodes the quoted CGP string that starts at `text[start]` (a `"`). Escapes: \" \\ \r \n \t,
 * \e (end of line, decoded as LF) and \nnn (three decimal digits). Returns the value and the
 * index after the closing quote, or undefined for a malformed string.
 */
export function decodeQuoted(text: string, start: number): { value: string; end: number } | undefined {
  if (text[start] !== '"') return undefined;
  let value = '';
  let i = start + 1;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '"') return { value, end: i + 1 };
    if (c !== '\\') {
      value += c;
      i++;
      continue;
    }
    const n = text.charAt(i + 1);
    switch (n) {
      case '"':
      case '\\':
        value += n;
        i += 2;
        break;
      case 'r':
        value += '\r';
        i += 2;
        break;
      case 'n':
      case 'e':
        value += '\n';
        i += 2;
        break;
      case 't':
        value += '\t';
        i += 2;
        break;
      default: {
        const digits = text.slice(i + 1, i + 4);
        if (!/^[0-9]{3}$/.test(digits)) return undefined;
        value += String.fromCharCode(Number(digits));
        i += 4;
      }
    }
  }
  return undefined;
}

/** The escaped form of one character inside a CGP quoted string. */
function escapeChar(ch: string): string {
  switch (ch) {
    case '\\':
      return '\\\\';
    case '"':
      return '\\"';
    case '\t':
      return '\\t';
    default: {
      const code = ch.codePointAt(0) as number;
      if (code < 0x20 || code === 0x7f) return '\\' + String(code).padStart(3, '0');
      return ch;
    }
  }
}

/**
 * Encodes free text as a quoted CGP string: line breaks (CRLF, LF, CR) become \e, control
 * characters \nnn. The result never contains a raw CR or LF. When `maxBytes` is given and the
 * encoding would exceed it, the text is cut at a character boundary and ends in "...".
 */
export function encodeCgpString(text: string, maxBytes = Number.POSITIVE_INFINITY): string {
  const normalised = text.replace(/\r\n|\r|\n/g, '\n');
  const pieces: string[] = [];
  let bytes = 2;
  for (const ch of normalised) {
    const piece = ch === '\n' ? '\\e' : escapeChar(ch);
    pieces.push(piece);
    bytes += Buffer.byteLength(piece);
  }
  if (bytes <= maxBytes) return `"${pieces.join('')}"`;
  const room = maxBytes - 2 - 3;
  let used = 0;
  let kept = '';
  for (const piece of pieces) {
    const n = Buffer.byteLength(piece);
    if (used + n > room) break;
    kept += piece;
    used += n;
  }
  return `"${kept}..."`;
}

/** Text for an informational `* ` line: one line, printable. */
function infoText(text: string): string {
  return printable(text);
}

// ---------------------------------------------------------------------------------------------
// Replies

export type Reply =
  | { readonly kind: 'OK' }
  | { readonly kind: 'INTF'; readonly version: number }
  /** Header fields as "Name: value", added by CommuniGate before it accepts the message. */
  | { readonly kind: 'ADDHEADER'; readonly fields: readonly string[] }
  | { readonly kind: 'DISCARD' }
  /** Permanent: CommuniGate bounces the message with the text. */
  | { readonly kind: 'ERROR'; readonly text: string }
  /** Temporary: the message stays in CommuniGate's queue and is tried again. */
  | { readonly kind: 'REJECTED'; readonly text: string };

/**
 * One reply line with its LF, at most MAX_REPLY_BYTES bytes. Texts are cut to fit; header fields
 * are kept whole in order while they fit, the first one that does not fit is cut, the rest dropped.
 */
export function formatReply(seq: string, reply: Reply): string {
  const budget = MAX_REPLY_BYTES - Buffer.byteLength(seq) - 2; // the space after seq and the LF
  switch (reply.kind) {
    case 'OK':
      return `${seq} OK\n`;
    case 'INTF':
      return `${seq} INTF ${reply.version}\n`;
    case 'DISCARD':
      return `${seq} DISCARD\n`;
    case 'ERROR':
      return `${seq} ERROR ${encodeCgpString(reply.text, budget - 'ERROR '.length)}\n`;
    case 'REJECTED':
      return `${seq} REJECTED ${encodeCgpString(reply.text, budget - 'REJECTED '.length)}\n`;
    case 'ADDHEADER':
      return `${seq} ADDHEADER ${encodeHeaderBlock(reply.fields, budget - 'ADDHEADER  OK'.length)} OK\n`;
  }
}

/**
 * Header fields joined with \e, each unfolded onto one line, fitted into maxBytes. Fields after
 * the first are kept whole or dropped (from the end) so that a mark is never cut; the first
 * field (the verdict) is cut to what is left.
 */
export function encodeHeaderBlock(fields: readonly string[], maxBytes: number): string {
  const encoded = fields.map((raw) => encodeCgpString(unfold(raw)).slice(1, -1));
  const size = (list: readonly string[]) =>
    2 + list.reduce((n, e) => n + Buffer.byteLength(e), 0) + 2 * Math.max(0, list.length - 1);
  if (size(encoded) <= maxBytes) return `"${encoded.join('\\e')}"`;
  const first = fields[0];
  if (first === undefined) return '""';
  const rest = encoded.slice(1);
  const minFirst = 64;
  while (rest.length > 0 && size(['x'.repeat(minFirst), ...rest]) > maxBytes) rest.pop();
  const room = maxBytes - size(['', ...rest]);
  const head = encodeCgpString(unfold(first), room + 2).slice(1, -1);
  return `"${[head, ...rest].join('\\e')}"`;
}

function unfold(field: string): string {
  return field.replace(/\r?\n[ \t]*|\r[ \t]*/g, ' ');
}

/** An informational line (`* text`), ignored by CommuniGate but shown in its log. */
export function formatInfo(text: string): string {
  const line = `* ${infoText(text)}`;
  if (Buffer.byteLength(line) < MAX_REPLY_BYTES) return `${line}\n`;
  return `${Buffer.from(line)
    .subarray(0, MAX_REPLY_BYTES - 4)
    .toString('utf8')
    .replace(/\uFFFD$/, '')}...\n`;
}
