/**
 * The header block of a message, found while streaming: the one place that knows where a header
 * ends and how fields fold. Used by the content key, the relay's header rewrite and the
 * quarantine's release rewrite.
 */

/** A header block is looked for in the first this many bytes; a message without one by then is all body. */
export const MAX_HEADER_BLOCK = 1024 * 1024;

export interface RawHeaderField {
  /** Lower-case field name ('' for a line without a colon). */
  readonly name: string;
  /** The field as written: its folded lines with their line endings. */
  readonly raw: Buffer;
}

/**
 * A header block a front end parsed while receiving the message, carried with it so that nobody
 * parses it again: the fields, and the offset where the body (the blank line first) starts. As
 * mapHeaderBlock reads it: a message without a blank line is all header (bodyStart = its size);
 * one without a blank line within MAX_HEADER_BLOCK bytes is all body (no fields, bodyStart 0).
 */
export interface ParsedHeader {
  readonly fields: readonly RawHeaderField[];
  readonly bodyStart: number;
}

/**
 * Counts the fields named `name` (any case) in a header block: the loop guard's Received count,
 * the same in every front end.
 */
export function countFields(fields: readonly { readonly name: string }[], name: string): number {
  const want = name.toLowerCase();
  let n = 0;
  for (const f of fields) if (f.name === want) n++;
  return n;
}

/** Offset just past the last header line (where the blank line starts), or -1 when not seen yet. */
export function headerBlockEnd(buf: Buffer): number {
  if (buf[0] === 0x0a || (buf[0] === 0x0d && buf[1] === 0x0a)) return 0;
  let i = buf.indexOf(0x0a);
  while (i !== -1 && i + 1 < buf.length) {
    const next = buf[i + 1];
    if (next === 0x0a) return i + 1;
    if (next === 0x0d) {
      if (i + 2 >= buf.length) return -1; // CR at the end of what we have: wait for the next byte
      if (buf[i + 2] === 0x0a) return i + 1;
    }
    i = buf.indexOf(0x0a, i + 1);
  }
  return -1;
}

/** Splits a header block into fields (a line and its continuation lines), LF or CRLF. */
export function splitHeaderFields(block: Buffer): RawHeaderField[] {
  const fields: RawHeaderField[] = [];
  let start = 0;
  while (start < block.length) {
    let end = block.indexOf(0x0a, start);
    while (end !== -1 && end + 1 < block.length && (block[end + 1] === 0x20 || block[end + 1] === 0x09)) {
      end = block.indexOf(0x0a, end + 1);
    }
    const stop = end === -1 ? block.length : end + 1;
    const raw = block.subarray(start, stop);
    const colon = raw.indexOf(0x3a);
    fields.push({
      name: colon > 0 ? raw.subarray(0, colon).toString('latin1').trim().toLowerCase() : '',
      raw,
    });
    start = stop;
  }
  return fields;
}

/**
 * Finds and parses the header block of a message while its bytes go by (a front end's receive
 * path), as mapHeaderBlock would read the same bytes afterwards: the relay and the milter hand the
 * result to the core (MessageSource.header), which then does not parse the header again.
 */
export class HeaderWatcher {
  private readonly head: Buffer[] = [];
  private headBytes = 0;
  private parsed: ParsedHeader | undefined;
  /** Received fields seen (the loop guard), also in a header block that never ends. */
  hops = 0;

  /** The next bytes of the message, in order. */
  push(chunk: Buffer): void {
    if (this.parsed !== undefined || chunk.length === 0) return;
    this.head.push(chunk);
    this.headBytes += chunk.length;
    const joined = this.head.length === 1 ? chunk : Buffer.concat(this.head, this.headBytes);
    const end = headerBlockEnd(joined);
    if (end >= 0) {
      this.found({ fields: splitHeaderFields(joined.subarray(0, end)), bodyStart: end });
    } else if (this.headBytes >= MAX_HEADER_BLOCK) {
      // No blank line in the first MiB: all body, as every reader takes it; the loop guard still
      // counts the Received fields it can see there.
      this.found({ fields: [], bodyStart: 0 });
      this.hops = countFields(splitHeaderFields(joined.subarray(0, MAX_HEADER_BLOCK)), 'received');
    } else {
      this.head.splice(0, this.head.length, joined);
    }
  }

  /** The header block once the message has ended (`size` bytes): without a blank line, all header. */
  end(size: number): ParsedHeader {
    this.parsed ??= this.found({
      fields: splitHeaderFields(Buffer.concat(this.head, this.headBytes)),
      bodyStart: size,
    });
    return this.parsed;
  }

  private found(header: ParsedHeader): ParsedHeader {
    this.parsed = header;
    this.hops = countFields(header.fields, 'received');
    this.head.length = 0;
    return header;
  }
}

/** The unfolded value of a field, without the name and surrounding space. */
export function headerFieldValue(field: RawHeaderField, encoding: BufferEncoding = 'latin1'): string {
  const text = field.raw.toString(encoding);
  const colon = text.indexOf(':');
  return (colon >= 0 ? text.slice(colon + 1) : text).replace(/\r?\n[ \t]/g, ' ').trim();
}

/**
 * Streams `source`, handing its header block to `rewrite` once and passing every other byte
 * through unchanged. The block holds the fields before the blank line (the blank line itself is
 * body). A source that ends without a blank line is all header; one without a blank line within
 * MAX_HEADER_BLOCK bytes is all body (rewrite then gets no fields).
 */
export async function* mapHeaderBlock(
  source: AsyncIterable<Buffer>,
  rewrite: (fields: readonly RawHeaderField[], block: Buffer) => Buffer,
): AsyncGenerator<Buffer> {
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let done = false;
  for await (const chunk of source) {
    if (done) {
      yield chunk;
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
    done = true;
    pending.length = 0;
    const block = buf.subarray(0, Math.max(0, end));
    const head = rewrite(end === -1 ? [] : splitHeaderFields(block), block);
    if (head.length > 0) yield head;
    const rest = buf.subarray(Math.max(0, end));
    if (rest.length > 0) yield rest;
  }
  if (!done) {
    const block = Buffer.concat(pending, pendingBytes);
    const head = rewrite(splitHeaderFields(block), block);
    if (head.length > 0) yield head;
  }
}

/** Reads just the header fields of a message (stops reading at the blank line). */
export async function readHeaderFields(source: AsyncIterable<Buffer>): Promise<RawHeaderField[]> {
  let fields: RawHeaderField[] | undefined;
  const stream = mapHeaderBlock(source, (f) => {
    fields = [...f];
    return Buffer.alloc(0);
  });
  for await (const _ of stream) if (fields !== undefined) break;
  return fields ?? [];
}
