import { createReadStream, createWriteStream, mkdirSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { SandgateError } from '../core/errors.js';
import type { ParsedHeader } from '../core/header-block.js';
import type { Envelope, MessageSource } from '../core/message.js';
import { pump } from './pump.js';
import { registerSpoolFile, releaseSpoolFile, spoolFileName } from './spool-owner.js';

export interface SpoolOptions {
  readonly msgId: string;
  readonly envelope: Envelope;
  /** Directory for file spools (created if missing). */
  readonly dir: string;
  /** Up to this many bytes stay in memory; beyond it the spool moves to a file. */
  readonly memoryThreshold: number;
  /** Bytes beyond this are counted but not kept; `sizeExceeded` is then true. */
  readonly maxBytes?: number;
  /**
   * What a message larger than maxBytes does. 'drain' (default): the input is read to its end and
   * the bytes beyond maxBytes are only counted, so a protocol peer reaches its final byte and gets
   * its reply (the relay answers 552). 'fail': reading stops at the first byte beyond maxBytes, the
   * input is destroyed, the spool is removed and fromStream rejects with ERR_MESSAGE_TOO_LARGE
   * (`sandgate scan -`, whose input may never end).
   */
  readonly overflow?: 'drain' | 'fail';
  readonly signal?: AbortSignal;
}

/**
 * A message read once and kept for several readers: in memory below a threshold, in a file
 * above it. Has one owner that calls dispose() in `finally`; retain() lets a background task
 * (monitor mode, a sandbox poll) keep the bytes until it is done.
 */
export class Spool implements MessageSource {
  readonly msgId: string;
  readonly envelope: Envelope;
  private chunks: Buffer[] = [];
  private file: string | undefined;
  private bytes = 0;
  private received = 0;
  private refs = 1;
  private deleted = false;
  /** The header block, when the receiver parsed it on the way in (MessageSource.header). */
  header: ParsedHeader | undefined;

  private constructor(options: SpoolOptions) {
    this.msgId = options.msgId;
    this.envelope = options.envelope;
  }

  /** Bytes kept (at most maxBytes). */
  get size(): number {
    return this.bytes;
  }

  /** Bytes the sender sent, including any beyond maxBytes. */
  get receivedBytes(): number {
    return this.received;
  }

  get sizeExceeded(): boolean {
    return this.received > this.bytes;
  }

  /** Path of the spool file, or undefined while the message is held in memory. */
  get path(): string | undefined {
    return this.file;
  }

  /**
   * Reads `input` to its end into a new spool. Unless `overflow` is 'fail', the input is read to
   * the end even past maxBytes, so a protocol peer gets its reply after the last byte. A write
   * failure rejects with ERR_SPOOL_WRITE after the input has been drained and the partial file
   * removed.
   */
  static async fromStream(input: Readable, options: SpoolOptions): Promise<Spool> {
    const spool = new Spool(options);
    const max = options.maxBytes ?? Number.POSITIVE_INFINITY;
    const failOnOverflow = options.overflow === 'fail';
    let out: WriteStream | undefined;
    let writeError: unknown;

    const sink = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _enc, done) {
        spool.received += chunk.length;
        if (failOnOverflow && spool.received > max) {
          return done(
            new SandgateError('ERR_MESSAGE_TOO_LARGE', `the message is larger than ${max} bytes`, {
              details: { maxBytes: max },
            }),
          );
        }
        const room = max - spool.bytes;
        const keep = room >= chunk.length ? chunk : room > 0 ? chunk.subarray(0, room) : undefined;
        if (keep === undefined || writeError !== undefined) return done();
        spool.bytes += keep.length;
        if (out === undefined && spool.bytes <= options.memoryThreshold) {
          spool.chunks.push(keep);
          return done();
        }
        if (out === undefined) {
          try {
            mkdirSync(options.dir, { recursive: true });
            // The owner (pid and start time) is in the name: a later start removes it if we die.
            spool.file = join(options.dir, spoolFileName(options.msgId, 'eml'));
            registerSpoolFile(spool.file);
            out = createWriteStream(spool.file, { flags: 'wx', mode: 0o600 });
            out.on('error', (err) => {
              writeError ??= err;
            });
          } catch (err) {
            writeError = err;
            return done();
          }
          for (const c of spool.chunks) out.write(c);
          spool.chunks = [];
        }
        // Keep reading after a write error (the peer must reach its final byte), but stop writing.
        if (out.write(keep)) return done();
        const onDrain = () => {
          out?.off('error', onError);
          done();
        };
        const onError = () => {
          out?.off('drain', onDrain);
          done();
        };
        out.once('drain', onDrain);
        out.once('error', onError);
      },
      final(done) {
        if (out === undefined) return done();
        out.end(() => done());
      },
    });

    try {
      // The lean pipeline(): stream/promises' builds an AbortController and an AbortError per call.
      await pump([input, sink], options.signal);
    } catch (err) {
      // The file is opened asynchronously: wait until it is closed, or removing it could come first.
      await closed(out);
      spool.dispose();
      throw err;
    }
    if (writeError !== undefined) {
      await closed(out);
      spool.dispose();
      throw new SandgateError('ERR_SPOOL_WRITE', 'cannot write the message to the spool', {
        cause: writeError,
        details: { dir: options.dir },
      });
    }
    return spool;
  }

  open(range: { start?: number; end?: number } = {}): Readable {
    if (this.deleted) throw new Error(`spool ${this.msgId} was read after dispose()`);
    if (this.file !== undefined) {
      return createReadStream(this.file, {
        highWaterMark: 64 * 1024,
        ...(range.start !== undefined ? { start: range.start } : {}),
        ...(range.end !== undefined ? { end: range.end - 1 } : {}),
      });
    }
    return Readable.from(sliceChunks(this.chunks, range.start ?? 0, range.end ?? this.bytes), {
      objectMode: false,
    });
  }

  /** The whole message; in memory, its chunks without a stream (see readChunks()). */
  iterate(): AsyncIterable<Buffer> {
    if (this.deleted) throw new Error(`spool ${this.msgId} was read after dispose()`);
    return this.file !== undefined ? this.open() : eachOf(this.chunks);
  }

  /** Keeps the bytes alive for another holder; call the returned function when done. */
  retain(): () => void {
    this.refs++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.dispose();
    };
  }

  /** Releases the owner's reference; the bytes are removed when the last holder is done. */
  dispose(): void {
    if (this.deleted) return;
    this.refs--;
    if (this.refs > 0) return;
    this.deleted = true;
    this.chunks = [];
    if (this.file !== undefined) {
      rmSync(this.file, { force: true });
      releaseSpoolFile(this.file);
    }
  }
}

/** Resolves once a write stream has released its file descriptor (destroying it if still open). */
function closed(out: WriteStream | undefined): Promise<void> {
  if (out === undefined || out.closed) return Promise.resolve();
  return new Promise((resolve) => {
    out.once('close', () => resolve());
    out.destroy();
  });
}

/** The chunks of a list, one by one (dispose() replaces the list; a reader keeps the one it has). */
function eachOf(chunks: readonly Buffer[]): AsyncIterable<Buffer> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<Buffer> {
      let i = 0;
      return {
        next: () =>
          Promise.resolve<IteratorResult<Buffer>>(
            i < chunks.length
              ? { done: false, value: chunks[i++] as Buffer }
              : { done: true, value: undefined },
          ),
        return: () => {
          i = chunks.length;
          return Promise.resolve({ done: true, value: undefined });
        },
      };
    },
  };
}

/** The bytes [start, end) of a list of chunks, without copying. */
export function* sliceChunks(chunks: readonly Buffer[], start: number, end: number): Generator<Buffer> {
  let offset = 0;
  for (const c of chunks) {
    const cStart = offset;
    const cEnd = offset + c.length;
    offset = cEnd;
    if (cEnd <= start) continue;
    if (cStart >= end) break;
    yield c.subarray(Math.max(0, start - cStart), Math.min(c.length, end - cStart));
  }
}

/**
 * A message that already sits in a file we do not own (CommuniGate's queue file, a file given to
 * `sandgate scan`): never modified, never deleted. `start` skips a leading envelope block.
 * `openFlags` (numeric open(2) flags) replace 'r' for every open(): the helper passes O_NOFOLLOW
 * and O_NONBLOCK (src/helper/envelope.ts QUEUE_FILE_FLAGS).
 */
export class FileMessage implements MessageSource {
  readonly size: number;

  constructor(
    readonly msgId: string,
    readonly envelope: Envelope,
    private readonly path: string,
    private readonly start = 0,
    size?: number,
    private readonly openFlags?: number,
  ) {
    this.size = size ?? statSync(path).size - start;
  }

  open(range: { start?: number; end?: number } = {}): Readable {
    const s = this.start + (range.start ?? 0);
    const e = this.start + (range.end ?? this.size);
    if (e <= s) return Readable.from([]);
    return createReadStream(this.path, {
      start: s,
      end: e - 1,
      highWaterMark: 64 * 1024,
      // fs.open() takes numeric flags too; the stream options are typed as a string.
      ...(this.openFlags !== undefined ? { flags: this.openFlags as unknown as string } : {}),
    });
  }
}

/** A message held in memory (tests, small generated messages). */
export class BufferMessage implements MessageSource {
  readonly size: number;
  constructor(
    readonly msgId: string,
    readonly envelope: Envelope,
    private readonly bytes: Buffer,
  ) {
    this.size = bytes.length;
  }
  open(range: { start?: number; end?: number } = {}): Readable {
    return Readable.from([this.bytes.subarray(range.start ?? 0, range.end ?? this.bytes.length)]);
  }
}
