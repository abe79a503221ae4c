/**
 * Reads one ICAP response as its bytes arrive, pure (no I/O): the head (any number of 100
 * Continue heads before it), the encapsulated HTTP header sections the Encapsulated offsets
 * describe, and the chunked body up to its zero chunk. Every malformed byte is an
 * IcapProtocolError; sizes are bounded.
 */
import {
  IcapProtocolError,
  MAX_ENCAPSULATED_HEADER_BYTES,
  MAX_HEAD_BYTES,
  parseEncapsulated,
  parseHttpHead,
  parseIcapHead,
  printable,
  type Encapsulated,
  type HttpHead,
  type IcapHead,
} from './protocol.js';

export type ReaderEvent =
  /** An interim "ICAP/1.0 100 Continue". */
  | { readonly type: 'continue' }
  /** The final response's head, with its Encapsulated header when it has one. */
  | { readonly type: 'head'; readonly head: IcapHead; readonly encapsulated?: Encapsulated }
  /** One encapsulated HTTP header section. */
  | { readonly type: 'http-head'; readonly section: 'req-hdr' | 'res-hdr'; readonly http: HttpHead }
  /** Bytes of the encapsulated body (decoded from its chunks). */
  | { readonly type: 'body'; readonly data: Buffer }
  /** The response is complete. Bytes after it are unsolicited (see ResponseReader.trailing). */
  | { readonly type: 'end' };

type State = 'head' | 'encap' | 'size' | 'data' | 'data-crlf' | 'trailer' | 'done';

/** Longest chunk-size line (with extensions) and trailer line we accept. */
const MAX_LINE = 4096;

export class ResponseReader {
  private state: State = 'head';
  private buf: Buffer = Buffer.alloc(0);
  private encapLength = 0;
  private encapsulated: Encapsulated | undefined;
  private chunkLeft = 0;
  /** Bytes that arrived after the response ended (the connection is then out of step). */
  trailing = 0;

  get done(): boolean {
    return this.state === 'done';
  }

  /** Feeds bytes; returns what they completed, in order. Throws IcapProtocolError on malformed input. */
  feed(chunk: Buffer): ReaderEvent[] {
    const events: ReaderEvent[] = [];
    if (this.state === 'done') {
      this.trailing += chunk.length;
      return events;
    }
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const progressed = this.step(events);
      if (this.done) {
        this.trailing += this.buf.length;
        this.buf = Buffer.alloc(0);
        return events;
      }
      if (!progressed) return events;
    }
  }

  /** Handles what the buffer allows in the current state; false when more bytes are needed. */
  private step(events: ReaderEvent[]): boolean {
    switch (this.state) {
      case 'head':
        return this.readHead(events);
      case 'encap':
        return this.readEncapsulatedHeaders(events);
      case 'size':
        return this.readChunkSize();
      case 'data':
        return this.readChunkData(events);
      case 'data-crlf':
        return this.readChunkEnd();
      case 'trailer':
        return this.readTrailer(events);
      case 'done':
        return false;
    }
  }

  private readHead(events: ReaderEvent[]): boolean {
    const end = headEnd(this.buf);
    if (end === undefined) {
      if (this.buf.length > MAX_HEAD_BYTES)
        throw new IcapProtocolError(`ICAP head longer than ${MAX_HEAD_BYTES} bytes`);
      return false;
    }
    const head = parseIcapHead(this.buf.subarray(0, end.start));
    this.buf = this.buf.subarray(end.next);
    if (head.status === 100) {
      events.push({ type: 'continue' });
      return true;
    }
    if (head.status >= 101 && head.status < 200) {
      throw new IcapProtocolError(`unexpected interim status ${head.status}`);
    }
    const value = head.headers.get('Encapsulated');
    const encapsulated = value === undefined ? undefined : parseEncapsulated(value);
    events.push({ type: 'head', head, ...(encapsulated !== undefined ? { encapsulated } : {}) });
    if (head.status === 204 && encapsulated !== undefined && encapsulated.body.name !== 'null-body') {
      throw new IcapProtocolError(`204 with an encapsulated ${encapsulated.body.name}`);
    }
    if (encapsulated === undefined) {
      // 204, 100 and errors need none (RFC 3507 4.4.1); a 200 must say where its parts are.
      if (head.status === 200) throw new IcapProtocolError('200 without an Encapsulated header');
      this.finish(events);
      return true;
    }
    this.encapsulated = encapsulated;
    this.encapLength = encapsulated.body.offset;
    if (this.encapLength > MAX_ENCAPSULATED_HEADER_BYTES) {
      throw new IcapProtocolError(`encapsulated headers longer than ${MAX_ENCAPSULATED_HEADER_BYTES} bytes`);
    }
    this.state = 'encap';
    return true;
  }

  private readEncapsulatedHeaders(events: ReaderEvent[]): boolean {
    const enc = this.encapsulated as Encapsulated;
    if (this.buf.length < this.encapLength) return false;
    const block = this.buf.subarray(0, this.encapLength);
    this.buf = this.buf.subarray(this.encapLength);
    enc.headers.forEach((entity, i) => {
      const next = enc.headers[i + 1]?.offset ?? enc.body.offset;
      const section = block.subarray(entity.offset, next);
      if (entity.name !== 'req-hdr' && entity.name !== 'res-hdr') {
        throw new IcapProtocolError(`unexpected header entity ${entity.name}`);
      }
      events.push({ type: 'http-head', section: entity.name, http: parseHttpHead(section, entity.name) });
    });
    if (enc.body.name === 'null-body') this.finish(events);
    else this.state = 'size';
    return true;
  }

  private readChunkSize(): boolean {
    const line = takeLine(this.buf, 'chunk size');
    if (line === undefined) return false;
    this.buf = this.buf.subarray(line.next);
    // size [; extensions]; "ieof" only ever comes from the client, so any extension is ignored.
    const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line.text);
    if (m === null) throw new IcapProtocolError(`bad chunk size line: "${printable(line.text)}"`);
    const size = parseInt(m[1] as string, 16);
    if (size === 0) {
      this.state = 'trailer';
      return true;
    }
    this.chunkLeft = size;
    this.state = 'data';
    return true;
  }

  private readChunkData(events: ReaderEvent[]): boolean {
    if (this.buf.length === 0) return false;
    const n = Math.min(this.chunkLeft, this.buf.length);
    events.push({ type: 'body', data: this.buf.subarray(0, n) });
    this.buf = this.buf.subarray(n);
    this.chunkLeft -= n;
    if (this.chunkLeft === 0) this.state = 'data-crlf';
    return true;
  }

  private readChunkEnd(): boolean {
    if (this.buf.length === 0) return false;
    if (this.buf[0] === 0x0a) {
      this.buf = this.buf.subarray(1);
    } else if (this.buf[0] === 0x0d) {
      if (this.buf.length < 2) return false;
      if (this.buf[1] !== 0x0a) throw new IcapProtocolError('chunk data not followed by CRLF');
      this.buf = this.buf.subarray(2);
    } else {
      throw new IcapProtocolError('chunk data longer than its size line says');
    }
    this.state = 'size';
    return true;
  }

  /** Trailer lines after the zero chunk, up to the empty line. */
  private readTrailer(events: ReaderEvent[]): boolean {
    const line = takeLine(this.buf, 'trailer');
    if (line === undefined) return false;
    this.buf = this.buf.subarray(line.next);
    if (line.text === '') this.finish(events);
    return true;
  }

  private finish(events: ReaderEvent[]): void {
    this.state = 'done';
    events.push({ type: 'end' });
  }
}

/** Where the empty line ending a head is: the head's bytes end at `start`, the rest begins at `next`. */
function headEnd(buf: Buffer): { start: number; next: number } | undefined {
  const crlf = buf.indexOf('\r\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf < 0 && lf < 0) return undefined;
  if (lf < 0 || (crlf >= 0 && crlf < lf)) return { start: crlf, next: crlf + 4 };
  return { start: buf[lf - 1] === 0x0d ? lf - 1 : lf, next: lf + 2 };
}

function takeLine(buf: Buffer, what: string): { text: string; next: number } | undefined {
  const nl = buf.indexOf(0x0a);
  if (nl < 0) {
    if (buf.length > MAX_LINE) throw new IcapProtocolError(`${what} line longer than ${MAX_LINE} bytes`);
    return undefined;
  }
  const end = nl > 0 && buf[nl - 1] === 0x0d ? nl - 1 : nl;
  return { text: buf.subarray(0, end).toString('latin1'), next: nl + 1 };
}
