import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync, type WriteStream } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { sliceChunks } from './spool.js';
import { registerSpoolFile, releaseSpoolFile, spoolFileName } from './spool-owner.js';

/** How many leading bytes a part keeps for magic-number checks. */
export const HEAD_BYTES = 4096;

/** Read size of scan() over a file spool. */
const SCAN_BUFFER = 256 * 1024;

/** Called with each decoded chunk before it is kept; throws to end the write (a walk limit). */
export type ChunkGuard = (length: number) => void;

/**
 * The decoded bytes of one part: in memory up to a threshold, in a file above it, with the size
 * and SHA-256 known once written, so the part can be opened several times. One owner disposes it.
 * A part that stays in memory is hashed only when its SHA-256 is first asked for (most small
 * parts never are); a part that goes to a file is hashed while written.
 */
export class PartSpool {
  private chunks: Buffer[] = [];
  private file: string | undefined;
  private out: WriteStream | undefined;
  /** Hashes the bytes as they are written once the part has moved to a file. */
  private hash: Hash | undefined;
  private digest = '';
  private ended = false;
  private headBuf: Buffer = Buffer.alloc(0);
  private bytes = 0;
  private disposed = false;

  constructor(
    private readonly dir: string,
    private readonly threshold: number,
    private readonly guard?: ChunkGuard,
  ) {}

  get size(): number {
    return this.bytes;
  }

  /** Hex SHA-256 of the bytes; '' until the spool is complete. */
  get sha256(): string {
    if (this.digest !== '' || !this.ended) return this.digest;
    if (this.disposed) throw new Error('part spool read after dispose()');
    const hash = createHash('sha256');
    for (const c of this.chunks) hash.update(c);
    this.digest = hash.digest('hex');
    return this.digest;
  }

  get head(): Buffer {
    return this.headBuf;
  }

  /** Path of the spool file, or undefined while the part is in memory. */
  get path(): string | undefined {
    return this.file;
  }

  /**
   * Appends decoded bytes without a stream in between (a single writer that calls end() after
   * its last write): returns at once, or a promise while the spool file pushes back. Throws what
   * the guard throws.
   */
  write(chunk: Buffer): Promise<void> | undefined {
    this.guard?.(chunk.length);
    return this.append(chunk);
  }

  /** Completes the spool after the last write(): closes the file, if any. */
  end(): Promise<void> {
    return new Promise((resolve) => this.complete(() => resolve()));
  }

  private complete(done: () => void): void {
    this.ended = true;
    if (this.hash !== undefined) this.digest = this.hash.digest('hex');
    if (this.out === undefined) return done();
    const out = this.out;
    this.out = undefined;
    out.end(() => done());
  }

  /** A sink for the decoded bytes; the spool is complete when it finishes. */
  writable(): Writable {
    return new Writable({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _enc, done) => {
        let wait: Promise<void> | undefined;
        try {
          wait = this.write(chunk);
        } catch (err) {
          return done(err as Error);
        }
        if (wait === undefined) return done();
        wait.then(() => done(), done);
      },
      final: (done) => this.complete(() => done()),
      destroy: (err, done) => {
        if (this.out !== undefined) {
          const out = this.out;
          this.out = undefined;
          out.destroy();
        }
        done(err);
      },
    });
  }

  /** Keeps one chunk; a promise only while the spool file pushes back. */
  private append(chunk: Buffer): Promise<void> | undefined {
    if (this.disposed) throw new Error('part spool written after dispose()');
    if (this.headBuf.length < HEAD_BYTES) {
      const take = chunk.subarray(0, HEAD_BYTES - this.headBuf.length);
      this.headBuf = this.headBuf.length === 0 ? Buffer.from(take) : Buffer.concat([this.headBuf, take]);
    }
    this.bytes += chunk.length;
    if (this.out === undefined && this.bytes <= this.threshold) {
      this.chunks.push(chunk);
      return undefined;
    }
    if (this.out === undefined) {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      this.file = join(this.dir, spoolFileName(`part-${randomBytes(8).toString('hex')}`, 'bin'));
      registerSpoolFile(this.file);
      const out = createWriteStream(this.file, { flags: 'wx', mode: 0o600 });
      this.out = out;
      this.hash = createHash('sha256');
      for (const c of this.chunks) {
        this.hash.update(c);
        out.write(c);
      }
      this.chunks = [];
    }
    this.hash?.update(chunk);
    const out = this.out;
    if (out.write(chunk)) return undefined;
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        out.off('error', onError);
        resolve();
      };
      const onError = (err: Error) => {
        out.off('drain', onDrain);
        reject(err);
      };
      out.once('drain', onDrain);
      out.once('error', onError);
    });
  }

  /** A fresh stream over the bytes (or a byte range of them: end exclusive). */
  open(range: { start?: number; end?: number } = {}): Readable {
    if (this.disposed) throw new Error('part spool read after dispose()');
    const start = range.start ?? 0;
    const end = Math.min(range.end ?? this.bytes, this.bytes);
    if (end <= start) return Readable.from([]);
    if (this.file !== undefined) {
      return createReadStream(this.file, { start, end: end - 1, highWaterMark: 64 * 1024 });
    }
    return Readable.from(sliceChunks(this.chunks, start, end), { objectMode: false });
  }

  /**
   * Visits the bytes in order without allocating per chunk: a file spool is read into one reused
   * buffer, so `visit` must not keep the chunk. Stops early when `visit` returns 'stop'.
   */
  async scan(visit: (chunk: Buffer) => void | 'stop', signal?: AbortSignal): Promise<void> {
    if (this.disposed) throw new Error('part spool read after dispose()');
    if (this.file === undefined) {
      for (const c of this.chunks) if (visit(c) === 'stop') return;
      return;
    }
    const fh = await openFile(this.file, 'r');
    try {
      const buf = Buffer.allocUnsafe(Math.min(SCAN_BUFFER, this.bytes));
      for (let pos = 0; pos < this.bytes;) {
        signal?.throwIfAborted();
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        if (visit(buf.subarray(0, bytesRead)) === 'stop') return;
      }
    } finally {
      await fh.close();
    }
  }

  /** Reads up to `length` bytes at `start` (for archive directories). */
  async read(start: number, length: number): Promise<Buffer> {
    if (this.disposed) throw new Error('part spool read after dispose()');
    const end = Math.min(start + length, this.bytes);
    if (end <= start) return Buffer.alloc(0);
    if (this.file === undefined) {
      const parts = [...sliceChunks(this.chunks, start, end)];
      return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    }
    const fh = await openFile(this.file, 'r');
    try {
      const buf = Buffer.alloc(end - start);
      const { bytesRead } = await fh.read(buf, 0, buf.length, start);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.chunks = [];
    const out = this.out;
    const file = this.file;
    this.out = undefined;
    if (file === undefined) return;
    if (out !== undefined && !out.closed) {
      // The file is opened asynchronously: remove it once the stream has let go, or it could reappear.
      out.once('close', () => {
        rmSync(file, { force: true });
        releaseSpoolFile(file);
      });
      out.destroy();
    } else {
      rmSync(file, { force: true });
      releaseSpoolFile(file);
    }
  }
}
