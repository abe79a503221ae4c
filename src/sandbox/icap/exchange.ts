import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { BodyComparator, type Comparison } from './compare.js';
import {
  CHUNK_END,
  chunkHeader,
  IcapProtocolError,
  IEOF_CHUNK,
  ZERO_CHUNK,
  type Encapsulated,
  type HttpHead,
  type IcapHead,
} from './protocol.js';
import { ResponseReader } from './response-reader.js';

export interface ExchangeRequest {
  /** The request head (ICAP headers and encapsulated HTTP headers). */
  readonly head: Buffer;
  readonly body?: {
    readonly open: () => Readable;
    readonly size: number;
    /** Bytes to send as a preview (the head must say Preview: the same number); undefined: all at once. */
    readonly preview?: number;
  };
}

export interface ExchangeOptions {
  /** Epoch ms: the whole exchange is over by then. */
  readonly deadline: number;
  readonly signal?: AbortSignal;
  readonly now: () => number;
}

/** What happened on the wire, for src/sandbox/icap/verdict.ts. */
export interface ExchangeResult {
  /**
   * complete: a whole response was read. closed: the connection ended or was reset first.
   * protocol: the response was malformed. source-failed: reading our content failed.
   */
  readonly ended: 'complete' | 'closed' | 'timeout' | 'aborted' | 'protocol' | 'source-failed';
  /** An error code, a parse error, or the phase a timeout hit. */
  readonly detail?: string;
  /** The final response head (never a 100). */
  readonly head?: IcapHead;
  readonly encapsulated?: Encapsulated;
  readonly httpHeads: ReadonlyArray<{ readonly section: 'req-hdr' | 'res-hdr'; readonly http: HttpHead }>;
  /** The encapsulated body: bytes received, whether its zero chunk came, and how it compares with what we sent. */
  readonly body: { readonly bytes: number; readonly complete: boolean; readonly comparison?: Comparison };
  /** Every byte of our body and its final zero chunk were written. */
  readonly sentAll: boolean;
  /** Set when a preview was sent. `answered`: the final answer came instead of 100 Continue. */
  readonly preview?: { readonly bytes: number; readonly ieof: boolean; readonly answered: boolean };
  /** Response bytes received (0: the server said nothing at all). */
  readonly received: number;
  /** The connection is in step and may carry the next request. */
  readonly reusable: boolean;
}

/** The write error a connection's socket recorded instead of dying of it (see IcapSocket). */
export function writeErrorCode(socket: Socket | TLSSocket): string | undefined {
  return (socket as { writeError?: NodeJS.ErrnoException }).writeError?.code;
}

type Ended = ExchangeResult['ended'];

/** The state of one request/response on a connection. */
export class Exchange {
  private readonly reader = new ResponseReader();
  private readonly comparator: BodyComparator | undefined;
  private head: IcapHead | undefined;
  private encapsulated: Encapsulated | undefined;
  private readonly httpHeads: Array<{ section: 'req-hdr' | 'res-hdr'; http: HttpHead }> = [];
  private bodyBytes = 0;
  private bodyComplete = false;
  private received = 0;
  private sentAll = false;
  private preview: { bytes: number; ieof: boolean; answered: boolean } | undefined;
  private ended: { how: Ended; detail?: string } | undefined;
  private waitingForContinue: ((what: 'continue' | 'final' | 'ended') => void) | undefined;
  private resolveDone!: () => void;
  private readonly doneSignal = new Promise<void>((r) => (this.resolveDone = r));
  private source: Readable | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly onAbort = (): void => this.end('aborted');

  constructor(
    private readonly socket: Socket | TLSSocket,
    private readonly req: ExchangeRequest,
    private readonly o: ExchangeOptions,
  ) {
    this.comparator = req.body !== undefined ? new BodyComparator(req.body.open, req.body.size) : undefined;
  }

  async run(): Promise<ExchangeResult> {
    const left = this.o.deadline - this.o.now();
    if (this.ended !== undefined) {
      // closed before we started
    } else if (this.o.signal?.aborted === true) this.end('aborted');
    else if (left <= 0) this.end('timeout', 'before sending');
    else {
      this.timer = setTimeout(
        () => this.end('timeout', this.waitingForContinue !== undefined ? 'after the preview' : 'answer'),
        left,
      );
      this.o.signal?.addEventListener('abort', this.onAbort, { once: true });
      this.send().catch((err: unknown) => {
        if (this.ended === undefined)
          this.end('source-failed', err instanceof Error ? err.message : String(err));
      });
    }
    await this.doneSignal;
    clearTimeout(this.timer);
    this.o.signal?.removeEventListener('abort', this.onAbort);
    this.source?.destroy();
    this.comparator?.destroy();
    const ended = this.ended as { how: Ended; detail?: string };
    const connectionClose = /(^|,)\s*close\s*(,|$)/i.test(this.head?.headers.get('Connection') ?? '');
    const inStep = this.sentAll || this.preview?.answered === true;
    return {
      ended: ended.how,
      ...(ended.detail !== undefined ? { detail: ended.detail } : {}),
      ...(this.head !== undefined ? { head: this.head } : {}),
      ...(this.encapsulated !== undefined ? { encapsulated: this.encapsulated } : {}),
      httpHeads: this.httpHeads,
      body: {
        bytes: this.bodyBytes,
        complete: this.bodyComplete,
        ...(this.comparison !== undefined ? { comparison: this.comparison } : {}),
      },
      sentAll: this.sentAll,
      ...(this.preview !== undefined ? { preview: { ...this.preview } } : {}),
      received: this.received,
      reusable:
        ended.how === 'complete' &&
        inStep &&
        !connectionClose &&
        this.reader.trailing === 0 &&
        !this.socket.destroyed &&
        writeErrorCode(this.socket) === undefined,
    };
  }

  private comparison: Comparison | undefined;
  /** The whole response has been read (its body may still be being compared). */
  private responseDone = false;

  onData(data: Buffer): void {
    if (this.ended !== undefined) return;
    this.received += data.length;
    let events;
    try {
      events = this.reader.feed(data);
    } catch (err) {
      this.end('protocol', err instanceof IcapProtocolError ? err.message : String(err));
      return;
    }
    for (const ev of events) {
      switch (ev.type) {
        case 'continue':
          // Only the one we wait for after a preview counts; any other (also one after ieof) is ignored.
          this.waitingForContinue?.('continue');
          this.waitingForContinue = undefined;
          break;
        case 'head':
          this.head = ev.head;
          if (ev.encapsulated !== undefined) this.encapsulated = ev.encapsulated;
          this.waitingForContinue?.('final');
          this.waitingForContinue = undefined;
          break;
        case 'http-head':
          this.httpHeads.push({ section: ev.section, http: ev.http });
          break;
        case 'body':
          this.bodyBytes += ev.data.length;
          if (this.comparator !== undefined && !this.comparator.push(ev.data)) {
            this.socket.pause();
            this.comparator.onDrain(() => this.socket.resume());
          }
          break;
        case 'end':
          this.responseDone = true;
          this.bodyComplete = this.encapsulated !== undefined && this.encapsulated.body.name !== 'null-body';
          void this.complete();
          break;
      }
    }
  }

  onClose(code: string): void {
    // A close after a complete response (Connection: close) is the end of it: its body may still
    // be being compared with what we sent.
    if (this.responseDone) return;
    this.end('closed', code);
  }

  private async complete(): Promise<void> {
    if (this.comparator !== undefined && this.bodyComplete) {
      try {
        this.comparison = await this.comparator.result();
      } catch (err) {
        this.end('source-failed', err instanceof Error ? err.message : String(err));
        return;
      }
    }
    this.end('complete');
  }

  private end(how: Ended, detail?: string): void {
    if (this.ended !== undefined) return;
    this.ended = { how, ...(detail !== undefined ? { detail } : {}) };
    this.waitingForContinue?.('ended');
    this.waitingForContinue = undefined;
    this.resolveDone();
  }

  private get stopped(): boolean {
    return (
      this.ended !== undefined ||
      this.responseDone ||
      this.socket.destroyed ||
      writeErrorCode(this.socket) !== undefined
    );
  }

  /**
   * Writes the head and the body in chunks: with a preview, its bytes and "0" (or "0; ieof" when
   * they are the whole body), then, after 100 Continue, the rest. Each source chunk goes out as one
   * chunk in one flush. A final answer to the preview ends the sending; outside a preview, only a
   * complete answer does (c-icap may stream the start of its answer while it still reads).
   */
  private async send(): Promise<void> {
    const s = this.socket;
    const body = this.req.body;
    s.cork();
    s.write(this.req.head);
    if (body === undefined) {
      this.sentAll = true;
      s.uncork();
      return;
    }
    this.source = body.open();
    const it = (this.source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    let carry: Buffer | undefined;
    let sent = 0;
    if (body.preview !== undefined) {
      const wanted = Math.min(body.preview, body.size);
      while (sent < wanted) {
        const r = await it.next();
        if (r.done === true) break;
        const data = toBuffer(r.value);
        const take = Math.min(data.length, wanted - sent);
        if (take > 0) this.writeChunk(data.subarray(0, take));
        sent += take;
        if (take < data.length) carry = data.subarray(take);
        if (this.stopped) return s.uncork();
      }
      if (sent < wanted) throw new Error(`the content ended after ${sent} of ${body.size} bytes`);
      const ieof = body.size <= body.preview;
      this.preview = { bytes: sent, ieof, answered: false };
      if (ieof) {
        await this.finishBody(it, IEOF_CHUNK, body.size, sent);
        return;
      }
      s.write(ZERO_CHUNK);
      s.uncork();
      const what = await new Promise<'continue' | 'final' | 'ended'>((resolve) => {
        if (this.ended !== undefined) resolve('ended');
        else if (this.head !== undefined) resolve('final');
        else this.waitingForContinue = resolve;
      });
      if (what === 'final') this.preview.answered = true;
      if (what !== 'continue') return;
      s.cork();
    }
    if (carry !== undefined) {
      this.writeChunk(carry);
      sent += carry.length;
    }
    for (;;) {
      if (this.stopped) return s.uncork();
      if (s.writableNeedDrain) {
        s.uncork();
        await drained(s);
        if (this.stopped) return;
        s.cork();
      }
      const r = await it.next();
      if (r.done === true) break;
      const data = toBuffer(r.value);
      if (data.length === 0) continue;
      if (sent + data.length > body.size)
        throw new Error(`the content is longer than its stated size ${body.size}`);
      if (this.stopped) return s.uncork();
      this.writeChunk(data);
      sent += data.length;
      s.uncork();
      s.cork();
    }
    if (sent !== body.size) throw new Error(`the content ended after ${sent} of ${body.size} bytes`);
    await this.finishBody(it, ZERO_CHUNK, body.size, sent);
  }

  private async finishBody(
    it: AsyncIterator<unknown>,
    end: Buffer,
    size: number,
    sent: number,
  ): Promise<void> {
    const s = this.socket;
    if (sent === size) {
      // The stream may still owe its end; a longer stream than stated is our bug, not the server's.
      const r = await it.next();
      if (r.done !== true && toBuffer(r.value).length > 0) {
        s.uncork();
        throw new Error(`the content is longer than its stated size ${size}`);
      }
    }
    if (this.stopped) return s.uncork();
    s.write(end);
    s.uncork();
    this.sentAll = true;
  }

  private writeChunk(data: Buffer): void {
    this.socket.write(chunkHeader(data.length));
    this.socket.write(data);
    this.socket.write(CHUNK_END);
  }
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk));
}

/** Resolves on 'drain', or when the socket closes or a write fails (the caller then stops). */
function drained(socket: Socket | TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      socket.off('write-failed', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
    socket.on('write-failed', done);
  });
}
