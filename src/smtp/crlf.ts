const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/**
 * Rewrites a byte stream so that every line ends in CRLF: a bare LF and a bare CR each become
 * CRLF. With `dotStuff`, a dot at the start of a line is doubled (RFC 5321 4.5.2), which is what
 * goes on the wire after DATA. Together these make SMTP smuggling impossible: "\n.\n", "\r.\r",
 * "\n.\r\n" and friends can no longer end the message early at a lenient next hop.
 *
 * Stateful across chunks; call end() once after the last chunk.
 */
export class LineNormaliser {
  private pendingCr = false;
  private atLineStart = true;

  constructor(private readonly dotStuff: boolean) {}

  push(chunk: Buffer): Buffer {
    // Worst case every byte doubles (a run of bare LFs or dots), plus a pending CR.
    const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
    let o = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i] as number;
      if (this.pendingCr) {
        this.pendingCr = false;
        out[o++] = CR;
        out[o++] = LF;
        this.atLineStart = true;
        if (b === LF) continue;
      }
      if (b === CR) {
        this.pendingCr = true;
        continue;
      }
      if (b === LF) {
        out[o++] = CR;
        out[o++] = LF;
        this.atLineStart = true;
        continue;
      }
      if (this.atLineStart && b === DOT && this.dotStuff) out[o++] = DOT;
      this.atLineStart = false;
      out[o++] = b;
    }
    return out.subarray(0, o);
  }

  /** Flushes a trailing CR. */
  end(): Buffer {
    if (this.pendingCr) {
      this.pendingCr = false;
      this.atLineStart = true;
      return Buffer.from('\r\n');
    }
    return Buffer.alloc(0);
  }

  /** True when the bytes so far end in the middle of a line. */
  get lastLineOpen(): boolean {
    return !this.atLineStart || this.pendingCr;
  }
}

/** Dot-stuffs and normalises `source` for the wire after DATA, ending with the CRLF.CRLF terminator. */
export async function* toDataWire(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const n = new LineNormaliser(true);
  for await (const chunk of source) {
    const out = n.push(chunk);
    if (out.length > 0) yield out;
  }
  const tail = n.end();
  if (tail.length > 0) yield tail;
  yield Buffer.from(n.lastLineOpen ? '\r\n.\r\n' : '.\r\n');
}
