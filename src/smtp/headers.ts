import type { HeaderField } from '../core/evaluation.js';
import { mapHeaderBlock } from '../core/header-block.js';
import { readChunks, readChunksFrom, type MessageSource } from '../core/message.js';

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
 * Streams a message with its header block rewritten: `prepend` on top, `strip` fields removed,
 * everything else byte for byte. With the header block parsed on receipt (message.header) the
 * kept fields are written from it and the body read from where it starts; otherwise only the
 * header block is buffered (at most MAX_HEADER_BLOCK).
 */
export async function* rewriteHeaders(message: MessageSource, rw: HeaderRewrite): AsyncGenerator<Buffer> {
  const top = Buffer.from(rw.prepend.map(formatField).join(''), 'utf8');
  const strip = new Set(rw.strip.map((s) => s.toLowerCase()));
  const parsed = message.header;
  if (strip.size === 0) {
    if (top.length > 0) yield top;
    yield* readChunks(message);
    return;
  }
  if (parsed !== undefined) {
    if (top.length > 0) yield top;
    for (const f of parsed.fields) if (!strip.has(f.name)) yield f.raw;
    yield* readChunksFrom(message, parsed.bodyStart);
    return;
  }
  yield* mapHeaderBlock(readChunks(message), (fields, block) => {
    const kept = fields.filter((f) => !strip.has(f.name));
    return Buffer.concat([
      top,
      kept.length === fields.length ? block : Buffer.concat(kept.map((f) => f.raw)),
    ]);
  });
}
