import { Transform, type TransformCallback } from 'node:stream';
import { decode as qpDecode } from 'libqp';

/** A line without a line break longer than this is decoded in pieces instead of being kept. */
const MAX_CARRY = 64 * 1024;

/**
 * Quoted-printable decoding as a real stream. libqp's own Decoder stream keeps the whole body
 * until it ends (a 100 MB part would sit in memory twice); this one decodes whole lines with
 * libqp's decode() as they arrive and carries only the unfinished last line.
 */
export class QpDecoder extends Transform {
  private carry: Buffer = Buffer.alloc(0);

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    let cut = buf.lastIndexOf(0x0a) + 1;
    if (cut === 0 && buf.length > MAX_CARRY) {
      // No line break in sight: decode all but a possibly split "=XX" escape at the end.
      cut = buf.length;
      if (buf[cut - 1] === 0x3d) cut -= 1;
      else if (buf[cut - 2] === 0x3d) cut -= 2;
    }
    if (cut === 0) {
      this.carry = Buffer.from(buf);
      return done();
    }
    this.carry = cut < buf.length ? Buffer.from(buf.subarray(cut)) : Buffer.alloc(0);
    const out = qpDecode(buf.subarray(0, cut));
    if (out.length > 0) this.push(out);
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.carry.length > 0) {
      const out = qpDecode(this.carry);
      this.carry = Buffer.alloc(0);
      if (out.length > 0) this.push(out);
    }
    done();
  }
}
