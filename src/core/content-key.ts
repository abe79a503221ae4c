import { createHash } from 'node:crypto';
import type { MessageSource } from './message.js';

/** Header fields we add; inbound copies are left out of the content key and stripped by front ends. */
export const OUR_HEADER_PREFIX = 'x-sandgate-';

/** Trace fields that relays prepend; a leading run of them is left out of the content key. */
const TRACE_FIELDS = new Set(['received', 'return-path', 'x-original-to', 'delivered-to']);

/** The header block is read up to this size; a message whose header block is larger is hashed whole. */
const MAX_HEADER_BLOCK = 1024 * 1024;

export interface HeaderLine {
  /** Lower-case field name. */
  readonly name: string;
  /** Unfolded value without the leading space. */
  readonly value: string;
}

export interface MessageAnalysis {
  /** SHA-256 hex over the message without leading trace fields and our own fields, line endings as LF. */
  readonly contentKey: string;
  readonly headers: readonly HeaderLine[];
}

/**
 * One pass over the message: parses the header block and computes the content key, so a retry
 * that arrives with a fresh Received line, or through another front end with other line endings,
 * is the same content.
 */
export async function analyseMessage(message: MessageSource): Promise<MessageAnalysis> {
  const hash = createHash('sha256');
  const lf = new LfNormaliser((b) => hash.update(b));
  const headerChunks: Buffer[] = [];
  let headerBytes = 0;
  let headers: HeaderLine[] | undefined;

  for await (const chunk of message.open() as AsyncIterable<Buffer>) {
    if (headers !== undefined) {
      lf.push(chunk);
      continue;
    }
    headerChunks.push(chunk);
    headerBytes += chunk.length;
    const pending = headerChunks.length === 1 ? chunk : Buffer.concat(headerChunks, headerBytes);
    const end = headerEnd(pending);
    if (end === -1 && headerBytes < MAX_HEADER_BLOCK) {
      if (headerChunks.length > 1) headerChunks.splice(0, headerChunks.length, pending);
      continue;
    }
    const block = end === -1 ? Buffer.alloc(0) : pending.subarray(0, end);
    headers = hashHeaderBlock(end === -1 ? [] : splitFields(block), lf);
    lf.push(pending.subarray(end === -1 ? 0 : end));
    headerChunks.length = 0;
  }
  if (headers === undefined) {
    // No blank line and under the limit: a message of headers only.
    headers = hashHeaderBlock(splitFields(Buffer.concat(headerChunks, headerBytes)), lf);
  }
  lf.end();
  return { contentKey: hash.digest('hex'), headers };
}

/** Feeds the header fields that count to the hash; returns all fields for the caller. */
function hashHeaderBlock(fields: readonly RawField[], lf: LfNormaliser): HeaderLine[] {
  let leading = true;
  for (const f of fields) {
    const ours = f.name.startsWith(OUR_HEADER_PREFIX);
    const trace = TRACE_FIELDS.has(f.name);
    // Our own fields, wherever they sit, neither count nor end the leading run of trace fields.
    if (ours) continue;
    if (!trace) leading = false;
    if (leading) continue;
    lf.push(f.raw);
  }
  return fields.map((f) => ({ name: f.name, value: f.value }));
}

/** Offset just past the header block's last field line (before the blank line), or -1. */
function headerEnd(buf: Buffer): number {
  if (buf[0] === 0x0a) return 0;
  if (buf[0] === 0x0d && buf[1] === 0x0a) return 0;
  let i = buf.indexOf(0x0a);
  while (i !== -1 && i + 1 < buf.length) {
    const next = buf[i + 1];
    if (next === 0x0a) return i + 1;
    if (next === 0x0d && buf[i + 2] === 0x0a) return i + 1;
    i = buf.indexOf(0x0a, i + 1);
  }
  return -1;
}

interface RawField {
  name: string;
  value: string;
  raw: Buffer;
}

function splitFields(block: Buffer): RawField[] {
  const fields: RawField[] = [];
  let start = 0;
  while (start < block.length) {
    // A field runs until a newline followed by a character that is not a space or tab.
    let end = block.indexOf(0x0a, start);
    while (end !== -1 && end + 1 < block.length && (block[end + 1] === 0x20 || block[end + 1] === 0x09)) {
      end = block.indexOf(0x0a, end + 1);
    }
    const stop = end === -1 ? block.length : end + 1;
    const raw = block.subarray(start, stop);
    const text = raw.toString('latin1');
    const colon = text.indexOf(':');
    if (colon > 0) {
      fields.push({
        name: text.slice(0, colon).trim().toLowerCase(),
        value: text
          .slice(colon + 1)
          .replace(/\r?\n[ \t]/g, ' ')
          .trim(),
        raw,
      });
    } else {
      fields.push({ name: '', value: text.trim(), raw });
    }
    start = stop;
  }
  return fields;
}

/** Feeds bytes on with CRLF turned into LF, also when a CR ends one chunk and its LF starts the next. */
class LfNormaliser {
  private pendingCr = false;
  constructor(private readonly out: (b: Buffer) => void) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    let start = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (chunk[0] !== 0x0a) this.out(CR);
    }
    let cr = chunk.indexOf(0x0d, start);
    while (cr !== -1) {
      if (cr + 1 === chunk.length) {
        if (cr > start) this.out(chunk.subarray(start, cr));
        this.pendingCr = true;
        return;
      }
      if (chunk[cr + 1] === 0x0a) {
        if (cr > start) this.out(chunk.subarray(start, cr));
        start = cr + 1;
      }
      cr = chunk.indexOf(0x0d, cr + 1);
    }
    if (start < chunk.length) this.out(chunk.subarray(start));
  }

  end(): void {
    if (this.pendingCr) this.out(CR);
    this.pendingCr = false;
  }
}

const CR = Buffer.from([0x0d]);

/** sha256 hex of a string, for keys derived from other keys. */
export function sha256Hex(input: string | Buffer): string {
  return createHash('sha256').update(input).digest('hex');
}
