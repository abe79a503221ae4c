import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { ClamdAddress } from '../../config/clamd.js';
import { chunkHeader, encodeCommand, INSTREAM_END, MAX_REPLY_BYTES } from './protocol.js';

/**
 * A socket whose write errors do not destroy it. clamd answers "INSTREAM size limit exceeded"
 * and closes while we are still sending; our next write then fails with EPIPE or ECONNRESET. A
 * plain net.Socket destroys itself on that write error and the reply, already in the kernel's
 * receive buffer, is lost. Here the write error is recorded, writing stops, and the reply is read.
 */
class ClamdSocket extends Socket {
  writeError: NodeJS.ErrnoException | undefined;

  override _write(chunk: unknown, encoding: BufferEncoding, cb: (error?: Error | null) => void): void {
    super._write(chunk, encoding, (err) => this.afterWrite(err, cb));
  }

  override _writev(
    chunks: Array<{ chunk: unknown; encoding: BufferEncoding }>,
    cb: (error?: Error | null) => void,
  ): void {
    // net.Socket implements _writev; the stream typings mark it optional.
    if (super._writev) super._writev(chunks, (err) => this.afterWrite(err, cb));
    else cb(new Error('net.Socket without _writev'));
  }

  private afterWrite(err: Error | null | undefined, cb: (error?: Error | null) => void): void {
    if (err) {
      this.writeError ??= err;
      this.emit('write-failed', err);
    }
    cb();
  }
}

export interface ExchangeOptions {
  /** Epoch ms when the whole exchange (connect, send, reply) must be over. */
  readonly deadline: number;
  /** Longest time to wait for the connection itself. */
  readonly connectTimeoutMs: number;
  readonly signal?: AbortSignal;
  readonly now: () => number;
}

export type ExchangeRequest =
  | { readonly command: 'PING' | 'VERSION' }
  | {
      readonly command: 'INSTREAM';
      readonly open: () => Readable;
      /** Bytes open() yields: the end marker goes out with the last of them. */
      readonly size: number;
      readonly chunkSize: number;
    };

/** What happened on the wire. The scanner turns this into a Finding. */
export type ExchangeResult =
  /** A NUL-terminated reply. `early`: it came before we had sent everything. */
  | { readonly kind: 'reply'; readonly text: string; readonly early: boolean; readonly bytesSent: number }
  /** No connection: refused, no such socket, unreachable, or the connect timeout passed. */
  | { readonly kind: 'connect-failed'; readonly code: string }
  /** The deadline passed after the connection was made (or while connecting, when it is the tighter bound). */
  | { readonly kind: 'timeout'; readonly phase: 'connect' | 'reply' }
  | { readonly kind: 'aborted' }
  /** The connection ended or was reset before a complete reply. */
  | { readonly kind: 'closed'; readonly code: string; readonly partial: string; readonly bytesSent: number }
  /** The reply was longer than any clamd reply. */
  | { readonly kind: 'oversized-reply'; readonly partial: string }
  /** Reading the message to send failed: our side, not clamd's. */
  | { readonly kind: 'source-failed'; readonly error: Error };

/**
 * One clamd command on a fresh connection: connect, send, read the NUL-terminated reply. The
 * socket and the source stream are destroyed on every exit path. Never throws.
 */
export async function clamdExchange(
  address: ClamdAddress,
  request: ExchangeRequest,
  options: ExchangeOptions,
): Promise<ExchangeResult> {
  if (options.signal?.aborted) return { kind: 'aborted' };
  const socket = new ClamdSocket();
  // Small writes (the command, the 4-byte end marker) must not wait for Nagle and delayed ACKs.
  if (address.kind === 'tcp') socket.setNoDelay(true);
  let source: Readable | undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<ExchangeResult>((resolve) => {
      let settled = false;
      let connected = false;
      let received: Buffer = Buffer.alloc(0);
      let bytesSent = 0;
      let sentAll = false;
      let readError: string | undefined;

      const finish = (result: ExchangeResult): void => {
        if (settled) return;
        settled = true;
        resolve(result);
      };

      const connectBudget = Math.min(options.connectTimeoutMs, options.deadline - options.now());
      const connectBoundIsDeadline = options.deadline - options.now() <= options.connectTimeoutMs;
      if (connectBudget <= 0) return finish({ kind: 'timeout', phase: 'connect' });
      timer = setTimeout(() => {
        finish(
          connectBoundIsDeadline
            ? { kind: 'timeout', phase: 'connect' }
            : { kind: 'connect-failed', code: 'ETIMEDOUT' },
        );
      }, connectBudget);

      onAbort = () => finish({ kind: 'aborted' });
      options.signal?.addEventListener('abort', onAbort, { once: true });

      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (!connected) finish({ kind: 'connect-failed', code: err.code ?? err.message });
        else readError ??= err.code ?? err.message;
      });
      socket.on('data', (chunk: Buffer) => {
        received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
        const nul = received.indexOf(0);
        if (nul >= 0) {
          finish({
            kind: 'reply',
            text: received.subarray(0, nul).toString('latin1'),
            early: !sentAll,
            bytesSent,
          });
        } else if (received.length > MAX_REPLY_BYTES) {
          finish({ kind: 'oversized-reply', partial: received.subarray(0, 200).toString('latin1') });
        }
      });
      socket.on('close', () => {
        finish({
          kind: 'closed',
          code: readError ?? socket.writeError?.code ?? 'EOF',
          partial: received.toString('latin1'),
          bytesSent,
        });
      });

      socket.once('connect', () => {
        connected = true;
        clearTimeout(timer);
        const left = options.deadline - options.now();
        if (left <= 0) return finish({ kind: 'timeout', phase: 'reply' });
        timer = setTimeout(() => finish({ kind: 'timeout', phase: 'reply' }), left);
        const stopped = (): boolean => settled || socket.writeError !== undefined || socket.destroyed;
        // Each source chunk goes out in one flush with its chunk headers (the command rides with
        // the first one); the end marker rides with the last bytes when the size is known.
        const send = async (): Promise<void> => {
          if (request.command !== 'INSTREAM') {
            socket.write(encodeCommand(request.command));
            sentAll = true;
            return;
          }
          socket.cork();
          socket.write(encodeCommand(request.command));
          source = request.open();
          let ended = false;
          for await (const chunk of source as AsyncIterable<unknown>) {
            const data = toBuffer(chunk);
            if (ended && data.length > 0)
              throw new Error(`the content is longer than its stated size ${request.size}`);
            for (let off = 0; off < data.length; off += request.chunkSize) {
              if (stopped()) return;
              const piece = data.subarray(off, off + request.chunkSize);
              socket.write(chunkHeader(piece.length));
              const ok = socket.write(piece);
              bytesSent += piece.length;
              if (bytesSent === request.size) {
                socket.write(INSTREAM_END);
                ended = true;
                sentAll = true;
              }
              if (!ok) {
                socket.uncork();
                await drained(socket);
                socket.cork();
              }
            }
            socket.uncork();
            if (!ended) socket.cork();
          }
          if (stopped() || ended) return;
          socket.write(INSTREAM_END);
          socket.uncork();
          sentAll = true;
        };
        send().catch((err: unknown) => {
          // A failing source is ours; a failing socket shows up as 'close' or 'error' above.
          if (!socket.destroyed && !settled) {
            finish({ kind: 'source-failed', error: err instanceof Error ? err : new Error(String(err)) });
          }
        });
      });

      if (address.kind === 'unix') socket.connect({ path: address.path });
      else socket.connect({ host: address.host, port: address.port });
    });
  } finally {
    clearTimeout(timer);
    if (onAbort) options.signal?.removeEventListener('abort', onAbort);
    socket.destroy();
    source?.destroy();
  }
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk));
}

/** Resolves on 'drain', or when the socket closes or a write fails (the caller then stops). */
function drained(socket: ClamdSocket): Promise<void> {
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
