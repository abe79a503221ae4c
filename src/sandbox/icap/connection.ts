import { isIP, Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { IcapServiceUrl } from '../../config/icap.js';
import {
  Exchange,
  writeErrorCode,
  type ExchangeOptions,
  type ExchangeRequest,
  type ExchangeResult,
} from './exchange.js';

/**
 * A socket whose write errors do not destroy it: a service may answer (an error, or a verdict
 * from the preview) and close while we are still sending; the answer, already received, must not
 * be lost to the EPIPE of our next write. The write error is recorded and writing stops.
 */
class IcapSocket extends Socket {
  writeError: NodeJS.ErrnoException | undefined;

  override _write(chunk: unknown, encoding: BufferEncoding, cb: (error?: Error | null) => void): void {
    super._write(chunk, encoding, (err) => this.afterWrite(err, cb));
  }

  override _writev(
    chunks: Array<{ chunk: unknown; encoding: BufferEncoding }>,
    cb: (error?: Error | null) => void,
  ): void {
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

export interface TlsSettings {
  readonly ca?: Buffer;
  readonly rejectUnauthorized: boolean;
}

export interface ConnectOptions {
  readonly connectTimeoutMs: number;
  /** Epoch ms: connecting never goes past it. */
  readonly deadline: number;
  readonly signal?: AbortSignal;
  readonly now: () => number;
  readonly tls?: TlsSettings;
}

export type ConnectResult =
  | { readonly kind: 'connected'; readonly conn: IcapConnection }
  /** Refused, unreachable, no answer within connectTimeout, or a TLS handshake that failed (`tls`). */
  | { readonly kind: 'connect-failed'; readonly code: string; readonly tls?: boolean }
  /** The call's deadline passed while connecting. */
  | { readonly kind: 'timeout' }
  | { readonly kind: 'aborted' };

/** Opens a connection to an ICAP server (TLS for icaps://). Never throws. */
export function connectIcap(server: IcapServiceUrl, o: ConnectOptions): Promise<ConnectResult> {
  if (o.signal?.aborted === true) return Promise.resolve({ kind: 'aborted' });
  const left = o.deadline - o.now();
  if (left <= 0) return Promise.resolve({ kind: 'timeout' });
  const deadlineBound = left <= o.connectTimeoutMs;
  return new Promise<ConnectResult>((resolve) => {
    let socket: Socket | TLSSocket;
    let settled = false;
    const done = (r: ConnectResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      socket.removeListener('error', onError);
      if (r.kind !== 'connected') socket.destroy();
      resolve(r);
    };
    const onAbort = (): void => done({ kind: 'aborted' });
    const onError = (err: NodeJS.ErrnoException): void =>
      done({
        kind: 'connect-failed',
        code: err.code ?? err.message,
        ...(o.tls ? { tls: isTlsError(err) } : {}),
      });
    const timer = setTimeout(
      () => done(deadlineBound ? { kind: 'timeout' } : { kind: 'connect-failed', code: 'ETIMEDOUT' }),
      Math.min(left, o.connectTimeoutMs),
    );
    if (o.tls !== undefined) {
      socket = tlsConnect({
        host: server.host,
        port: server.port,
        ...(isIP(server.host) === 0 ? { servername: server.host } : {}),
        ...(o.tls.ca !== undefined ? { ca: o.tls.ca } : {}),
        rejectUnauthorized: o.tls.rejectUnauthorized,
      });
      socket.once('secureConnect', () => done({ kind: 'connected', conn: new IcapConnection(socket) }));
    } else {
      const plain = new IcapSocket();
      socket = plain;
      plain.setNoDelay(true);
      plain.once('connect', () => done({ kind: 'connected', conn: new IcapConnection(plain) }));
      plain.connect({ host: server.host, port: server.port });
    }
    socket.on('error', onError);
    o.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || /CERT|SELF_SIGNED|VERIFY/.test(code);
}

/**
 * One ICAP connection, kept alive between requests. One request at a time (RFC 3507 has no
 * pipelining we rely on). Data arriving while idle means the connection is out of step: it is
 * destroyed.
 */
export class IcapConnection {
  /** Requests sent on this connection so far. */
  requests = 0;
  private handler: ((data: Buffer) => void) | undefined;
  private closeHandler: ((code: string) => void) | undefined;
  private lastError: string | undefined;
  private closedFlag = false;

  constructor(private readonly socket: Socket | TLSSocket) {
    socket.on('data', (d: Buffer) => {
      if (this.handler !== undefined) this.handler(d);
      else socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.lastError ??= err.code ?? err.message;
    });
    socket.on('close', () => {
      this.closedFlag = true;
      this.closeHandler?.(this.lastError ?? writeErrorCode(socket) ?? 'EOF');
    });
  }

  get closed(): boolean {
    return this.closedFlag || this.socket.destroyed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Sends one request and reads its response. Never throws; the caller releases or destroys the connection. */
  async exchange(req: ExchangeRequest, o: ExchangeOptions): Promise<ExchangeResult> {
    this.requests++;
    const ex = new Exchange(this.socket, req, o);
    this.handler = (d) => ex.onData(d);
    this.closeHandler = (code) => ex.onClose(code);
    if (this.closed) ex.onClose(this.lastError ?? 'EOF');
    try {
      return await ex.run();
    } finally {
      this.handler = undefined;
      this.closeHandler = undefined;
    }
  }
}

export type { ExchangeOptions, ExchangeRequest, ExchangeResult } from './exchange.js';
