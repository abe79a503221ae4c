import { LineNormaliser } from '../core/line-endings.js';

const LF = 0x0a;
const DOT = 0x2e;

/**
 * Dot-stuffing alone, for bytes already normalised to CRLF (a LineNormaliser's output, such as the
 * relay's spool): one native search for LF "." per chunk instead of visiting every line ending.
 */
export class DotStuffer {
  private atLineStart = true;

  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    const startsWithDot = this.atLineStart && chunk[0] === DOT;
    this.atLineStart = chunk[chunk.length - 1] === LF;
    let lf = chunk.indexOf(LF_DOT);
    if (!startsWithDot && lf < 0) return chunk;
    const parts: Buffer[] = startsWithDot ? [DOT_BUF] : [];
    let from = 0;
    for (; lf >= 0; lf = chunk.indexOf(LF_DOT, from)) {
      parts.push(chunk.subarray(from, lf + 1), DOT_BUF);
      from = lf + 1;
    }
    parts.push(chunk.subarray(from));
    return Buffer.concat(parts);
  }

  end(): Buffer {
    return Buffer.alloc(0);
  }

  get lastLineOpen(): boolean {
    return !this.atLineStart;
  }
}

const LF_DOT = Buffer.from('\n.');
const DOT_BUF = Buffer.from('.');

/**
 * Dot-stuffs and normalises `source` for the wire after DATA, ending with the CRLF.CRLF
 * terminator. The terminator is joined to the last chunk, so a small message goes out in one
 * send rather than two (each send on a no-delay socket is its own segment and wake-up).
 * `crlf`: the caller vouches that `source` is already CRLF-normalised (the relay's spool), so only
 * dot-stuffing is left to do.
 */
export async function* toDataWire(
  source: AsyncIterable<Buffer>,
  options: { readonly crlf?: boolean } = {},
): AsyncGenerator<Buffer> {
  const n = options.crlf === true ? new DotStuffer() : new LineNormaliser(true);
  let held: Buffer | undefined;
  for await (const chunk of source) {
    const out = n.push(chunk);
    if (out.length === 0) continue;
    if (held !== undefined) yield held;
    held = out;
  }
  const tail = n.end();
  const end = Buffer.from(n.lastLineOpen ? '\r\n.\r\n' : '.\r\n');
  yield held === undefined ? Buffer.concat([tail, end]) : Buffer.concat([held, tail, end]);
}

/**
 * The bytes with every CRLF turned into LF (a CR at the end of one chunk and the LF at the start of
 * the next included); a bare CR stays. For files in a Unix program's native line ends.
 */
export async function* toLf(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let heldCr = false;
  for await (const chunk of source) {
    let buf: Buffer = heldCr ? Buffer.concat([CR_BYTE, chunk]) : chunk;
    heldCr = buf.length > 0 && buf[buf.length - 1] === 0x0d;
    if (heldCr) buf = buf.subarray(0, buf.length - 1);
    if (buf.indexOf(0x0d) === -1) {
      if (buf.length > 0) yield buf;
      continue;
    }
    const out = Buffer.allocUnsafe(buf.length);
    let n = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i] as number;
      if (c === 0x0d && buf[i + 1] === 0x0a) continue;
      out[n++] = c;
    }
    if (n > 0) yield out.subarray(0, n);
  }
  if (heldCr) yield CR_BYTE;
}

const CR_BYTE = Buffer.from('\r');
