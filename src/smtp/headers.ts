import type { HeaderField } from '../core/evaluation.js';

/** The header block is looked at up to this many bytes; a longer one is passed on as it is beyond that. */
export const MAX_HEADER_BYTES = 1024 * 1024;

const END = Buffer.from('\r\n\r\n');

/**
 * Splits a CRLF header block (latin1, so bytes survive) into whole fields, folded lines kept
 * with their field. Each field keeps its trailing CRLF.
 */
export function splitFields(block: string): string[] {
  const fields: string[] = [];
  let start = 0;
  while (start < block.length) {
    let end = block.indexOf('\r\n', start);
    end = end < 0 ? block.length : end + 2;
    // Continuation lines (starting with SP or HT) belong to the field before them.
    while (end < block.length && (block[end] === ' ' || block[end] === '\t')) {
      const next = block.indexOf('\r\n', end);
      end = next < 0 ? block.length : next + 2;
    }
    fields.push(block.slice(start, end));
    start = end;
  }
  return fields;
}

export function fieldName(field: string): string {
  const colon = field.indexOf(':');
  return (colon < 0 ? field : field.slice(0, colon)).trim().toLowerCase();
}

/** Counts fields named `name` (case-insensitive) in a header block. */
export function countFields(block: string, name: string): number {
  const want = name.toLowerCase();
  return splitFields(block).filter((f) => fieldName(f) === want).length;
}

/** One header field as wire bytes; CR and LF in the value are replaced so a value cannot add fields. */
export function formatField(h: HeaderField): string {
  const clean = (s: string) => s.replace(/[\r\n]+/g, ' ');
  return `${clean(h.name)}: ${clean(h.value)}\r\n`;
}

export interface HeaderRewrite {
  /** Fields added at the top, in order. */
  readonly prepend: readonly HeaderField[];
  /** Field names (any case) removed from the inbound header block. */
  readonly strip: readonly string[];
}

/**
 * Streams a CRLF message with its header block rewritten: `prepend` on top, `strip` fields
 * removed, everything else byte for byte. Only the header block is buffered (at most
 * MAX_HEADER_BYTES).
 */
export async function* rewriteHeaders(
  source: AsyncIterable<Buffer>,
  rw: HeaderRewrite,
): AsyncGenerator<Buffer> {
  const top = Buffer.from(rw.prepend.map(formatField).join(''), 'utf8');
  const strip = new Set(rw.strip.map((s) => s.toLowerCase()));
  if (strip.size === 0) {
    if (top.length > 0) yield top;
    yield* source;
    return;
  }
  let head: Buffer[] = [];
  let headLen = 0;
  let done = false;
  for await (const chunk of source) {
    if (done) {
      yield chunk;
      continue;
    }
    head.push(chunk);
    headLen += chunk.length;
    // Bounded: at most MAX_HEADER_BYTES plus one chunk is ever joined here.
    const joined = Buffer.concat(head, headLen);
    const at = joined[0] === 0x0d && joined[1] === 0x0a ? 0 : joined.indexOf(END);
    if (at < 0 && headLen < MAX_HEADER_BYTES) {
      head = [joined];
      continue;
    }
    done = true;
    head = [];
    const blockEnd = at < 0 ? joined.lastIndexOf('\r\n') + 2 : at + 2;
    yield Buffer.concat([top, filterBlock(joined.subarray(0, blockEnd), strip)]);
    if (blockEnd < joined.length) yield joined.subarray(blockEnd);
  }
  if (!done) {
    // No blank line: the whole message is a header block.
    const joined = Buffer.concat(head, headLen);
    yield Buffer.concat([top, filterBlock(joined, strip)]);
  }
}

function filterBlock(block: Buffer, strip: ReadonlySet<string>): Buffer {
  const fields = splitFields(block.toString('latin1'));
  const kept = fields.filter((f) => !strip.has(fieldName(f)));
  if (kept.length === fields.length) return block;
  return Buffer.from(kept.join(''), 'latin1');
}
