/**
 * One message as the MTA hands it to a milter, rebuilt into the bytes the relay would have
 * spooled: header events become `Name:value` CRLF lines (with HDR_LEADSPC the value keeps its
 * leading space, and folded lines arrive joined by a bare LF, which the line normaliser turns back
 * into CRLF), the blank line between header and body is put back, and body chunks follow. All of
 * it goes through the same line normaliser as the relay's DATA stream, so the content key of a
 * message is the same through either front end. The header block is parsed from those bytes on the
 * way (spool.header), so the core reads it as it reads the relay's.
 */
import { PassThrough } from 'node:stream';
import { countFields, HeaderWatcher } from '../core/header-block.js';
import { LineNormaliser } from '../core/line-endings.js';
import type { Envelope } from '../core/message.js';
import { Spool } from '../mime/spool.js';

export interface IncomingOptions {
  readonly msgId: string;
  readonly envelope: Envelope;
  readonly dir: string;
  readonly memoryThreshold: number;
  readonly maxBytes: number;
  /** HDR_LEADSPC was negotiated: header values arrive with the space after the colon. */
  readonly leadingSpace: boolean;
}

const COLON = Buffer.from(':');
const SPACE = Buffer.from(' ');
const CRLF = Buffer.from('\r\n');

export class IncomingMessage {
  /** Lower-case names of the header fields, in arrival order. */
  readonly headerNames: string[] = [];
  private readonly lines = new LineNormaliser(false);
  /** The header block parsed from the bytes spooled, as the relay does: the core does not parse it again. */
  private readonly watcher = new HeaderWatcher();
  private readonly stream = new PassThrough({ highWaterMark: 64 * 1024 });
  private readonly spool: Promise<Spool>;
  private inBody = false;
  private finished = false;

  constructor(private readonly o: IncomingOptions) {
    this.spool = Spool.fromStream(this.stream, {
      msgId: o.msgId,
      envelope: o.envelope,
      dir: o.dir,
      memoryThreshold: o.memoryThreshold,
      maxBytes: o.maxBytes,
    });
    // abort() settles it on purpose; finish() reports a real failure.
    this.spool.catch(() => undefined);
  }

  /** Received fields in the header (the loop guard). The MTA's own, hidden from milters, is not among them. */
  get hops(): number {
    return countFields(
      this.headerNames.map((name) => ({ name })),
      'received',
    );
  }

  /** How many header fields named `name` (any case) arrived. */
  countHeader(name: string): number {
    return countFields(
      this.headerNames.map((n) => ({ name: n })),
      name,
    );
  }

  /** Returns false when the spool wants the sender to wait for 'drain' (see whenDrained). */
  header(name: Buffer, value: Buffer): boolean {
    this.headerNames.push(name.toString('latin1').trim().toLowerCase());
    // Without HDR_LEADSPC the MTA removed one space after the colon: put it back.
    const space = !this.o.leadingSpace && value.length > 0 && value[0] !== 0x20 && value[0] !== 0x09;
    return this.write(Buffer.concat(space ? [name, COLON, SPACE, value, CRLF] : [name, COLON, value, CRLF]));
  }

  /** The blank line after the header fields (at EOH, or before the first body chunk or the end). */
  endOfHeaders(): boolean {
    if (this.inBody) return true;
    this.inBody = true;
    return this.write(CRLF);
  }

  body(chunk: Buffer): boolean {
    const ok = this.endOfHeaders();
    return chunk.length === 0 ? ok : this.write(chunk);
  }

  whenDrained(done: () => void): void {
    this.stream.once('drain', done);
  }

  /** Ends the message; resolves with its spool (whose owner is now the caller). */
  async finish(): Promise<Spool> {
    this.endOfHeaders();
    this.finished = true;
    const tail = this.lines.end();
    if (tail.length > 0) this.stream.write(tail);
    this.watcher.push(tail);
    this.stream.end();
    const spool = await this.spool;
    spool.header = this.watcher.end(spool.size);
    return spool;
  }

  /** Drops the message (ABORT, connection lost): nothing is left behind. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.stream.destroy(new Error('the MTA aborted the message'));
    await this.spool.then(
      (s) => s.dispose(),
      () => undefined,
    );
  }

  private write(bytes: Buffer): boolean {
    const out = this.lines.push(bytes);
    if (out.length === 0) return true;
    this.watcher.push(out);
    return this.stream.write(out);
  }
}
