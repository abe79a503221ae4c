import { OUR_HEADER_PREFIX, TRACE_FIELDS } from '../core/content-key.js';
import {
  headerFieldValue,
  mapHeaderBlock,
  readHeaderFields,
  type RawHeaderField,
} from '../core/header-block.js';

export interface ReleasedMessageOptions {
  /** Field lines (without line ending) written first: the envelope of a CommuniGate `.sub` file. */
  readonly envelopeFields?: readonly string[];
  /** The value of the fresh X-Sandgate-Mark. */
  readonly mark: string;
  /** Line endings of the output: 'crlf' leaves the message's own; 'lf' converts (a `.sub` file on Unix). */
  readonly eol: 'crlf' | 'lf';
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
  for await (const chunk of mapHeaderBlock(original, (fields) => rewriteHeader(fields, options, nl))) {
    const out = toEol(chunk);
    if (out.length > 0) yield out;
  }
  const tail = toEol(Buffer.alloc(0), true);
  if (tail.length > 0) yield tail;
}

function rewriteHeader(
  fields: readonly RawHeaderField[],
  options: ReleasedMessageOptions,
  nl: string,
): Buffer {
  // A message of headers only may end without a line break: give its last field one.
  const last = fields.at(-1);
  if (last !== undefined && last.raw[last.raw.length - 1] !== 0x0a) {
    fields = [...fields.slice(0, -1), { ...last, raw: Buffer.concat([last.raw, Buffer.from('\r\n')]) }];
  }
  let lead = 0;
  while (lead < fields.length && TRACE_FIELDS.has(fields[lead]!.name)) lead++;
  const keep = (f: RawHeaderField) => !f.name.startsWith(OUR_HEADER_PREFIX);
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
  return (await readHeaderFields(original)).map((f) => {
    const text = f.raw.toString('utf8');
    const colon = text.indexOf(':');
    return {
      name: colon > 0 ? text.slice(0, colon).trim() : text.trim(),
      value: colon > 0 ? headerFieldValue(f, 'utf8') : '',
    };
  });
}
