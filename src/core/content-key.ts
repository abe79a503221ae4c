import { createHash } from 'node:crypto';
import { headerFieldValue, mapHeaderBlock, type RawHeaderField } from './header-block.js';
import type { MessageSource } from './message.js';

/** Header fields we add; inbound copies are left out of the content key and stripped by front ends. */
export const OUR_HEADER_PREFIX = 'x-sandgate-';

/** Trace fields that relays prepend; a leading run of them is left out of the content key. */
export const TRACE_FIELDS = new Set(['received', 'return-path', 'x-original-to', 'delivered-to']);

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
  let headers: HeaderLine[] = [];
  const counted = mapHeaderBlock(message.open() as AsyncIterable<Buffer>, (fields) => {
    headers = fields.map((f) => ({ name: f.name, value: headerFieldValue(f) }));
    return Buffer.concat(fieldsThatCount(fields).map((f) => f.raw));
  });
  for await (const chunk of counted) lf.push(chunk);
  lf.end();
  return { contentKey: hash.digest('hex'), headers };
}

/** All fields but a leading run of trace fields and our own fields wherever they are. */
function fieldsThatCount(fields: readonly RawHeaderField[]): RawHeaderField[] {
  const kept: RawHeaderField[] = [];
  let leading = true;
  for (const f of fields) {
    // Our own fields neither count nor end the leading run of trace fields.
    if (f.name.startsWith(OUR_HEADER_PREFIX)) continue;
    if (!TRACE_FIELDS.has(f.name)) leading = false;
    if (!leading) kept.push(f);
  }
  return kept;
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
