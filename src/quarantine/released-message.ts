import { OUR_HEADER_PREFIX, TRACE_FIELDS } from '../core/content-key.js';
import { mapHeaderBlock, type RawHeaderField } from '../core/header-block.js';

export interface ReleasedMessageOptions {
  /** The value of the fresh X-Sandgate-Mark. */
  readonly mark: string;
}

/**
 * The message as it leaves the quarantine: the original's leading trace fields, then a fresh
 * X-Sandgate-Mark, then the original's other fields without any inbound X-Sandgate-* field, then
 * the body, in the original's line ends (the delivery normalises them for its target). The mark
 * goes after the leading trace fields so that the run of trace fields the content key skips stays
 * unbroken and the key the mark covers stays the same when the next hop prepends its own
 * Received field.
 */
export function releasedMessage(
  original: AsyncIterable<Buffer>,
  options: ReleasedMessageOptions,
): AsyncIterable<Buffer> {
  return mapHeaderBlock(original, (fields) => rewriteHeader(fields, options));
}

function rewriteHeader(fields: readonly RawHeaderField[], options: ReleasedMessageOptions): Buffer {
  // A message of headers only may end without a line break: give its last field one.
  const last = fields.at(-1);
  if (last !== undefined && last.raw[last.raw.length - 1] !== 0x0a) {
    fields = [...fields.slice(0, -1), { ...last, raw: Buffer.concat([last.raw, Buffer.from('\r\n')]) }];
  }
  let lead = 0;
  while (lead < fields.length && TRACE_FIELDS.has(fields[lead]!.name)) lead++;
  const keep = (f: RawHeaderField) => !f.name.startsWith(OUR_HEADER_PREFIX);
  // The mark's line end follows the original's (a CommuniGate queue file on Unix is in LF).
  const nl = fields[0] !== undefined && !fields[0].raw.includes('\r\n') ? '\n' : '\r\n';
  return Buffer.concat([
    ...fields.slice(0, lead).map((f) => f.raw),
    Buffer.from(`X-Sandgate-Mark: ${options.mark}${nl}`),
    ...fields
      .slice(lead)
      .filter(keep)
      .map((f) => f.raw),
  ]);
}
