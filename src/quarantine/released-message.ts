import { OUR_HEADER_PREFIX } from '../core/content-key.js';

/** Trace fields relays prepend (the content key skips a leading run of them). */
const TRACE_FIELDS = new Set(['received', 'return-path', 'x-original-to', 'delivered-to']);

/** The header block is looked for in the first this many bytes; beyond, the message is passed on as is. */
const MAX_HEADER_BLOCK = 1024 * 1024;

export interface ReleasedMessageOptions {
  /** Field lines (without line ending) written first: the envelope of a CommuniGate `.sub` file. */
  readonly envelopeFields?: readonly string[];
  /** The value of the fresh X-Sandgate-Mark. */
  readonly mark: string;
  /** Line endings of the output: 'crlf' leaves the message's own; 'lf' converts (a `.sub` file on Unix). */
  readonly eol: 'crlf' | 'lf';
}

export interface HeaderField {
  /** Lower-case name. */
  readonly name: string;
  /** The field as written, with its folded lines and line endings. */
  readonly raw: Buffer;
}

/**
 * The message as it leaves the quarantine: our envelope fields, then the original's leading trace
 * fields, then a fresh X-Sandgate-Mark, then the original's other fields without any inbound
 * X-Sandgate-* field, then the body. The mark goes after the leading trace fields so that the run of
 * trace fields the content key skips stays unbroken and the key the mark covers stays the same
 * when the next hop prepends its own Received field.
 */
export async function* releasedMessage(
  original: AsyncIterable<Buffer>,
  options: ReleasedMessageOptions,
): AsyncGenerator<Buffer> {
  const nl = options.eol === 'lf' ? '\n' : '\r\n';
  const toEol = options.eol === 'lf' ? crlfToLf() : (b: Buffer) => b;
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let inBody = false;
  for await (const chunk of original) {
    if (inBody) {
      const out = toEol(chunk);
      if (out.length > 0) yield out;
      continue;
    }
    pending.push(chunk);
    pendingBytes += chunk.length;
    const buf = pending.length === 1 ? chunk : Buffer.concat(pending, pendingBytes);
    const end = headerBlockEnd(buf);
    if (end === -1 && pendingBytes < MAX_HEADER_BLOCK) {
      pending.splice(0, pending.length, buf);
      continue;
    }
    inBody = true;
    pending.length = 0;
    const fields = end === -1 ? [] : splitFields(buf.subarray(0, end));
    yield toEol(Buffer.concat([rewriteHeader(fields, options, nl), buf.subarray(end === -1 ? 0 : end)]));
  }
  if (!inBody) {
    // Headers only (no blank line): every byte is header.
    const buf = Buffer.concat(pending, pendingBytes);
    const raw =
      buf.length > 0 && buf[buf.length - 1] !== 0x0a ? Buffer.concat([buf, Buffer.from('\r\n')]) : buf;
    yield toEol(rewriteHeader(splitFields(raw), options, nl));
  }
  const tail = toEol(Buffer.alloc(0), true);
  if (tail.length > 0) yield tail;
}

function rewriteHeader(fields: readonly HeaderField[], options: ReleasedMessageOptions, nl: string): Buffer {
  let lead = 0;
  while (lead < fields.length && TRACE_FIELDS.has(fields[lead]!.name)) lead++;
  const keep = (f: HeaderField) => !f.name.startsWith(OUR_HEADER_PREFIX);
  return Buffer.concat([
    Buffer.from((options.envelopeFields ?? []).map((f) => f + nl).join(''), 'utf8'),
    ...fields.slice(0, lead).map((f) => f.raw),
    Buffer.from(`X-Sandgate-Mark: ${options.mark}${nl}`),
    ...fields
      .slice(lead)
      .filter(keep)
      .map((f) => f.raw),
  ]);
}

/** Offset just past the last header line (where the blank line starts), or -1 when not yet seen. */
export function headerBlockEnd(buf: Buffer): number {
  if (buf[0] === 0x0a || (buf[0] === 0x0d && buf[1] === 0x0a)) return 0;
  let i = buf.indexOf(0x0a);
  while (i !== -1 && i + 1 < buf.length) {
    const next = buf[i + 1];
    if (next === 0x0a) return i + 1;
    if (next === 0x0d && buf[i + 2] === 0x0a) return i + 1;
    if (next === 0x0d && i + 2 >= buf.length) return -1;
    i = buf.indexOf(0x0a, i + 1);
  }
  return -1;
}

/** Splits a header block into fields (a line and its continuation lines). */
export function splitFields(block: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  let start = 0;
  let pos = 0;
  while (pos < block.length) {
    let eol = block.indexOf(0x0a, pos);
    eol = eol === -1 ? block.length : eol + 1;
    const next = block[eol];
    if (eol < block.length && (next === 0x20 || next === 0x09)) {
      pos = eol;
      continue;
    }
    const raw = block.subarray(start, eol);
    const colon = raw.indexOf(0x3a);
    const name = (colon > 0 ? raw.subarray(0, colon) : raw).toString('latin1').trim().toLowerCase();
    fields.push({ name, raw });
    start = pos = eol;
  }
  return fields;
}

/** A stateful CRLF -> LF converter that handles a CR at the end of one chunk and LF at the start of the next. */
function crlfToLf(): (chunk: Buffer, end?: boolean) => Buffer {
  let heldCr = false;
  return (chunk, end = false) => {
    let buf = heldCr ? Buffer.concat([Buffer.from('\r'), chunk]) : chunk;
    heldCr = false;
    if (!end && buf.length > 0 && buf[buf.length - 1] === 0x0d) {
      heldCr = true;
      buf = buf.subarray(0, buf.length - 1);
    }
    if (buf.indexOf(0x0d) === -1) return buf;
    const out = Buffer.allocUnsafe(buf.length);
    let n = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i]!;
      if (c === 0x0d && buf[i + 1] === 0x0a) continue;
      out[n++] = c;
    }
    return out.subarray(0, n);
  };
}

/** Parses the header block of a message (for `show`): names and unfolded values, in order. */
export async function readHeaders(
  original: AsyncIterable<Buffer>,
): Promise<Array<{ name: string; value: string }>> {
  const pending: Buffer[] = [];
  let bytes = 0;
  let block: Buffer | undefined;
  for await (const chunk of original) {
    pending.push(chunk);
    bytes += chunk.length;
    const buf = Buffer.concat(pending, bytes);
    const end = headerBlockEnd(buf);
    if (end !== -1 || bytes >= MAX_HEADER_BLOCK) {
      block = end === -1 ? buf.subarray(0, MAX_HEADER_BLOCK) : buf.subarray(0, end);
      break;
    }
    pending.splice(0, pending.length, buf);
  }
  block ??= Buffer.concat(pending, bytes);
  return splitFields(block).map((f) => {
    const text = f.raw.toString('utf8');
    const colon = text.indexOf(':');
    return {
      name: colon > 0 ? text.slice(0, colon).trim() : text.trim(),
      value:
        colon > 0
          ? text
              .slice(colon + 1)
              .replace(/\r?\n[ \t]+/g, ' ')
              .trim()
          : '',
    };
  });
}
