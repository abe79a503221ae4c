import type { MimeNode } from '@zone-eu/mailsplit';
import libmime from 'libmime';
import type { AnomalyKind } from './types.js';
import type { WalkState } from './walk-state.js';

/** Transfer encodings the walker decodes, or that need no decoding. */
const DECODED_ENCODINGS = new Set(['', '7bit', '8bit', 'binary', 'base64', 'quoted-printable']);

/** The uuencode transfer encodings (not in any RFC; mail clients decode them): see embedded.ts. */
export const UU_ENCODINGS: ReadonlySet<string> = new Set(['x-uuencode', 'x-uue', 'uuencode', 'uue']);

/** A boundary parameter in a raw Content-Type line ("Content-Type: multipart/mixed; boundary=..."). */
const BOUNDARY_PARAM = /;\s*boundary\s*\*?\s*=/gi;

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Checks one MIME node's header block for what clients may read differently (duplicate fields,
 * a boundary given twice, a transfer encoding we do not decode, an encoded multipart). Returns
 * the names the part goes by besides node.filename, for the name rules.
 */
export function checkNodeHeaders(state: WalkState, node: MimeNode, path: string): string[] {
  const headers = node.headers;
  if (headers === false) return [];
  // One pass over the raw lines (Headers.get() would decode every line it returns).
  let types = 0;
  let encodings = 0;
  let dispositions = 0;
  for (const { key, line } of headers.getList()) {
    if (key === 'content-type') {
      if (++types === 1 && (line.match(BOUNDARY_PARAM) ?? []).length > 1)
        state.flag('duplicate-boundary', path);
    } else if (key === 'content-transfer-encoding') encodings++;
    else if (key === 'content-disposition') dispositions++;
  }
  if (types > 1) state.flag('duplicate-content-type', path);
  if (encodings > 1) state.flag('duplicate-transfer-encoding', path);
  if (dispositions > 1) state.flag('duplicate-content-disposition', path);
  const encoding = node.encoding === false ? '' : node.encoding;
  if (node.multipart !== false) {
    // RFC 2045 allows only 7bit, 8bit and binary here; a client that decodes a base64 multipart
    // sees parts the splitter (which reads it raw) does not.
    if (encoding === 'base64' || encoding === 'quoted-printable') state.flag('encoded-multipart', path);
    return [];
  }
  if (!DECODED_ENCODINGS.has(encoding) && !UU_ENCODINGS.has(encoding)) {
    state.flag('unknown-transfer-encoding', path);
  }
  if (node.contentType === 'application/mac-binhex40') state.flag('binhex', path);
  return otherNames(state, node, path);
}

/** Names besides node.filename: the Content-Type name when it differs, a name cut at a control character. */
function otherNames(state: WalkState, node: MimeNode, path: string): string[] {
  const headers = node.headers;
  // No filename means neither parameter is there (mailsplit takes either): nothing to compare.
  if (headers === false || node.filename === false) return [];
  const names = new Set<string>();
  const chosen = node.filename;
  const disposition = paramOf(headers.getFirst('content-disposition'), 'filename');
  const typeName = paramOf(headers.getFirst('content-type'), 'name');
  for (const n of [disposition, typeName]) if (n !== undefined && n !== '' && n !== chosen) names.add(n);
  for (const n of [chosen, ...names]) {
    if (!CONTROL.test(n)) continue;
    state.flag('control-char-in-filename', path);
    // A C library stops at the NUL ("setup.exe\0.txt" opens as setup.exe); a sanitiser drops the controls.
    names.add(n.slice(0, n.search(CONTROL)));
    names.add(n.replace(new RegExp(CONTROL.source, 'g'), ''));
  }
  names.delete('');
  names.delete(chosen);
  return [...names];
}

/** One parameter of a structured header value, decoded as mailsplit decodes it (RFC 2231, then encoded words). */
function paramOf(value: string, name: string): string | undefined {
  if (value === '') return undefined;
  const parsed = libmime.parseHeaderValue(value, { stripComments: true });
  const raw = parsed.params[name];
  if (raw === undefined) return undefined;
  if (parsed.decodedParams?.includes(name)) return raw;
  try {
    return libmime.decodeWords(raw);
  } catch {
    return raw;
  }
}

/**
 * Watches the raw body of one leaf for lines that start like a delimiter of an enclosing
 * multipart without being one (`--AAAB` under boundary `AAA`): the splitter, as RFC 2046 says,
 * keeps them as content, but a client that matches a prefix starts a new part there. A leaf that
 * declares a boundary of its own (`text/html; boundary=...`) is watched for that one too: a
 * client that splits by the parameter, whatever the type, finds parts there.
 */
export class BoundaryWatch {
  private readonly needles: Array<{ readonly line: Buffer; readonly kind: AnomalyKind }>;
  private lastByte = 0x0a;
  private found: AnomalyKind | undefined;

  private constructor(needles: BoundaryWatch['needles']) {
    this.needles = needles;
  }

  /** A watch for a leaf: its ancestors' boundaries and its own; undefined when there is none. */
  static forLeaf(node: MimeNode): BoundaryWatch | undefined {
    const needles: BoundaryWatch['needles'] = [];
    const add = (boundary: Buffer, kind: AnomalyKind) =>
      needles.push({ line: delimiterLine(boundary), kind });
    if (node._boundary !== false) add(node._boundary, 'boundary-in-single-part');
    for (let n = node.parentNode; n !== false; n = n.parentNode) {
      if (n._boundary !== false) add(n._boundary, 'boundary-prefix');
    }
    return needles.length > 0 ? new BoundaryWatch(needles) : undefined;
  }

  /** The kind of the first line seen that starts with `--<boundary>`, if any so far. */
  push(chunk: Buffer): AnomalyKind | undefined {
    if (this.found !== undefined || chunk.length === 0) return this.found;
    for (const needle of this.needles) {
      if ((this.lastByte === 0x0a && startsWithAt(chunk, needle.line, 1)) || chunk.includes(needle.line)) {
        this.found = needle.kind;
        break;
      }
    }
    this.lastByte = chunk[chunk.length - 1] as number;
    return this.found;
  }
}

/** "\n--" + boundary, made once per boundary (every leaf under a multipart looks for it). */
const DELIMITER_LINES = new WeakMap<Buffer, Buffer>();
function delimiterLine(boundary: Buffer): Buffer {
  let line = DELIMITER_LINES.get(boundary);
  if (line === undefined) {
    line = Buffer.concat([LINE_START, boundary]);
    DELIMITER_LINES.set(boundary, line);
  }
  return line;
}
const LINE_START = Buffer.from('\n--');

function startsWithAt(chunk: Buffer, needle: Buffer, from: number): boolean {
  const len = needle.length - from;
  return chunk.length >= len && chunk.compare(needle, from, needle.length, 0, len) === 0;
}

/**
 * Watches a multipart's own data (preamble, delimiters, epilogue) for a delimiter line after its
 * closing delimiter: the splitter reads what follows as epilogue, a client that keeps parsing
 * shows the parts behind it.
 */
export class EpilogueWatch {
  private closed = false;
  private carry = '';
  private found = false;

  constructor(private readonly boundary: string) {}

  push(chunk: Buffer): boolean {
    if (this.found) return true;
    const text = this.carry + chunk.toString('latin1');
    const lines = text.split('\n');
    // Only the start of an unfinished line matters (is it a delimiter?).
    this.carry = (lines.pop() ?? '').slice(0, this.boundary.length + 8);
    for (const line of lines) this.line(line.replace(/[ \t\r]+$/, ''));
    return this.found;
  }

  private line(line: string): void {
    const delimiter = `--${this.boundary}`;
    if (!line.startsWith(delimiter)) return;
    if (this.closed) this.found = true;
    else if (line === `${delimiter}--`) this.closed = true;
  }
}
