import type { IcapServiceUrl } from '../../config/icap.js';
import type { Logger } from '../../core/logger.js';
import {
  connectIcap,
  type ConnectResult,
  type ExchangeOptions,
  type ExchangeRequest,
  type ExchangeResult,
  type IcapConnection,
  type TlsSettings,
} from './connection.js';
import {
  buildOptionsRequest,
  IcapProtocolError,
  parseOptions,
  printable,
  type IcapOptions,
} from './protocol.js';

/** One configured ICAP service as the pool sees it. */
export class IcapServer {
  readonly label: string;
  up = true;
  /** A server that is down is tried again (before a health check brings it back) from this time on. */
  retryAt = 0;
  lastError: string | undefined;
  /** The last OPTIONS answer, when it came, and until when it holds (Options-TTL; Infinity without one). */
  options: IcapOptions | undefined;
  optionsAt = 0;
  optionsUntil = 0;
  /** The last ISTag seen, from OPTIONS or a response. */
  istag: string | undefined;
  readonly idle: IcapConnection[] = [];
  /** Connections handed out or being opened. */
  active = 0;
  readonly waiters: Array<() => void> = [];
  fetching: Promise<OptionsResult> | undefined;

  constructor(readonly url: IcapServiceUrl) {
    this.label = url.label;
  }

  /** Connections open to this server (in use and idle). */
  get open(): number {
    return this.active + this.idle.length;
  }
}

export interface ServerStatus {
  readonly server: string;
  readonly up: boolean;
  readonly istag?: string;
  readonly lastError?: string;
  readonly connections: number;
  readonly idle: number;
}

export interface IcapPoolOptions {
  readonly strategy: 'failover' | 'round-robin';
  /** Our cap on connections per server; a lower Max-Connections from OPTIONS wins. */
  readonly maxConnections: number;
  /** Idle connections are closed after this long; 0: no keep-alive. */
  readonly keepAliveMs: number;
  /** OPTIONS to every server this often (0: none in the background). */
  readonly healthIntervalMs: number;
  readonly connectTimeoutMs: number;
  /** Set for icaps:// servers. */
  readonly tls?: TlsSettings;
  readonly log: Logger;
  readonly now?: () => number;
  readonly userAgent?: string;
}

export type OptionsResult =
  | { readonly kind: 'ok'; readonly options: IcapOptions }
  /** No connection (refused, unreachable, connect timeout, TLS handshake). */
  | { readonly kind: 'unreachable'; readonly code: string; readonly tls?: boolean }
  /** Connected, but the answer was not a usable OPTIONS answer (non-200, malformed, closed). */
  | { readonly kind: 'failed'; readonly message: string; readonly status?: number }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'aborted' };

export type PoolExchange =
  | { readonly kind: 'result'; readonly result: ExchangeResult }
  | Exclude<ConnectResult, { kind: 'connected' }>;

type Acquired =
  { readonly kind: 'conn'; readonly conn: IcapConnection; readonly reused: boolean } | PoolExchange;

/**
 * The configured ICAP services with their health, OPTIONS answers and kept-alive connections:
 * the order to try them in for one call (failover or round robin, healthy ones first), at most
 * min(maxConnections, Max-Connections) connections per server (callers beyond wait for one),
 * OPTIONS at start, every healthInterval and whenever Options-TTL has run out, and the ISTags
 * that make up the scanner's version.
 */
export class IcapPool {
  readonly servers: readonly IcapServer[];
  private readonly now: () => number;
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private closed = false;
  private readonly idleTimers = new Map<IcapConnection, NodeJS.Timeout>();

  constructor(
    urls: readonly IcapServiceUrl[],
    private readonly o: IcapPoolOptions,
  ) {
    if (urls.length === 0) throw new Error('IcapPool needs at least one server');
    this.now = o.now ?? Date.now;
    this.servers = urls.map((u) => new IcapServer(u));
  }

  /** Asks every server for OPTIONS now, and then every healthInterval. Timers do not keep the process alive. */
  start(): void {
    if (this.closed || this.o.healthIntervalMs <= 0 || this.timer !== undefined) return;
    void this.checkHealth();
    this.timer = setInterval(() => void this.checkHealth(), this.o.healthIntervalMs);
    this.timer.unref();
  }

  /** The servers to try for one call: up (or due for a retry) in strategy order, then the rest. */
  order(): IcapServer[] {
    const n = this.servers.length;
    const start = this.o.strategy === 'round-robin' ? this.next++ % n : 0;
    if (this.next >= Number.MAX_SAFE_INTEGER) this.next = 0;
    const rotated = [...this.servers.slice(start), ...this.servers.slice(0, start)];
    const now = this.now();
    const usable = rotated.filter((s) => s.up || now >= s.retryAt);
    return [...usable, ...rotated.filter((s) => !usable.includes(s))];
  }

  markUp(server: IcapServer): void {
    server.lastError = undefined;
    if (server.up) return;
    server.up = true;
    this.o.log.info({ event: 'icap.server_up', server: server.label }, 'ICAP server is answering again');
  }

  markDown(server: IcapServer, reason: string): void {
    server.lastError = reason;
    server.retryAt = this.now() + this.o.healthIntervalMs;
    // Whatever comes back may be another version: ask for OPTIONS again.
    server.optionsUntil = 0;
    for (const conn of server.idle.splice(0)) this.dropIdle(conn);
    if (!server.up) return;
    server.up = false;
    this.o.log.warn(
      { event: 'icap.server_down', server: server.label, reason },
      'ICAP server is not answering; using the others',
    );
  }

  /** OPTIONS to every server now (one round at a time). */
  checkHealth(): Promise<void> {
    this.checking ??= Promise.all(
      this.servers.map(async (s) => {
        const deadline = this.now() + this.o.connectTimeoutMs + 5000;
        await this.options(s, { deadline, force: true });
      }),
    ).then(
      () => {
        this.checking = undefined;
      },
      () => {
        this.checking = undefined;
      },
    );
    return this.checking;
  }

  /**
   * The server's OPTIONS answer: the one held while its Options-TTL lasts, else a fresh one (one
   * request per server at a time; callers share it). Marks the server up or down. Never throws.
   */
  async options(
    server: IcapServer,
    o: { readonly deadline: number; readonly signal?: AbortSignal; readonly force?: boolean },
  ): Promise<OptionsResult> {
    if (o.force !== true && server.options !== undefined && this.now() < server.optionsUntil) {
      return { kind: 'ok', options: server.options };
    }
    server.fetching ??= this.fetchOptions(server, o.deadline).finally(() => {
      server.fetching = undefined;
    });
    return raceAbort(server.fetching, o.signal, o.deadline, this.now);
  }

  /** Sends one request on a pooled connection; a kept-alive connection the server had closed is replaced once. */
  async exchange(server: IcapServer, req: ExchangeRequest, o: ExchangeOptions): Promise<PoolExchange> {
    for (let attempt = 0; ; attempt++) {
      const a = await this.acquire(server, o);
      if (a.kind !== 'conn') return a;
      const result = await a.conn.exchange(req, o);
      this.release(server, a.conn, result.reusable);
      if (result.ended === 'closed' && result.received === 0 && a.reused && attempt === 0) {
        this.o.log.debug(
          { event: 'icap.stale_connection', server: server.label, code: result.detail },
          'a kept-alive ICAP connection was closed by the server; retrying on a new one',
        );
        continue;
      }
      return { kind: 'result', result };
    }
  }

  /** ISTags of the servers that are up (OPTIONS refreshed when their TTL has run out), sorted and unique. */
  async istags(signal: AbortSignal, deadline: number): Promise<string[]> {
    const up = this.servers.filter((s) => s.up || this.now() >= s.retryAt);
    const tags = await Promise.all(
      up.map(async (s) => {
        const r = await this.options(s, { deadline, signal });
        return r.kind === 'ok' ? (r.options.istag ?? 'none') : undefined;
      }),
    );
    return [...new Set(tags.filter((t): t is string => t !== undefined))].sort();
  }

  /** Records the ISTag of a response. One that differs from the OPTIONS answer's means a new engine or database: ask OPTIONS again. */
  noteIstag(server: IcapServer, raw: string | undefined): string | undefined {
    if (raw === undefined) return server.istag;
    const istag = printable(raw.replace(/^"(.*)"$/, '$1'), 64);
    if (server.istag !== undefined && server.istag !== istag) {
      this.o.log.info(
        { event: 'icap.istag_changed', server: server.label, from: server.istag, to: istag },
        'ICAP service reports a new ISTag (engine or database changed)',
      );
    }
    server.istag = istag;
    const known = server.options?.istag;
    if (known !== undefined && known !== istag) server.optionsUntil = 0;
    return istag;
  }

  status(): ServerStatus[] {
    return this.servers.map((s) => ({
      server: s.label,
      up: s.up,
      ...(s.istag !== undefined ? { istag: s.istag } : {}),
      ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
      connections: s.open,
      idle: s.idle.length,
    }));
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const s of this.servers) {
      for (const conn of s.idle.splice(0)) this.dropIdle(conn);
      for (const w of s.waiters.splice(0)) w();
    }
  }

  /** The connection limit for this server: ours, or the service's Max-Connections when lower. */
  limit(server: IcapServer): number {
    return Math.min(this.o.maxConnections, server.options?.maxConnections ?? Number.POSITIVE_INFINITY);
  }

  private async fetchOptions(server: IcapServer, deadline: number): Promise<OptionsResult> {
    const ex = await this.exchange(
      server,
      { head: buildOptionsRequest(server.url, this.o.userAgent) },
      { deadline, now: this.now },
    );
    if (ex.kind === 'connect-failed') {
      this.markDown(server, `connect: ${ex.code}`);
      return { kind: 'unreachable', code: ex.code, ...(ex.tls !== undefined ? { tls: ex.tls } : {}) };
    }
    if (ex.kind !== 'result') return ex;
    const r = ex.result;
    if (r.ended === 'timeout') return { kind: 'timeout' };
    if (r.ended === 'aborted') return { kind: 'aborted' };
    if (r.ended !== 'complete' || r.head === undefined) {
      const message = `OPTIONS: ${r.ended}${r.detail !== undefined ? ` (${r.detail})` : ''}`;
      if (r.received === 0) this.markDown(server, message);
      else server.lastError = message;
      return { kind: 'failed', message };
    }
    this.markUp(server);
    try {
      const options = parseOptions(r.head);
      const now = this.now();
      server.options = options;
      server.optionsAt = now;
      server.optionsUntil =
        options.ttlSeconds !== undefined ? now + options.ttlSeconds * 1000 : Number.POSITIVE_INFINITY;
      this.noteIstag(server, options.istag);
      this.o.log.debug(
        {
          event: 'icap.options',
          server: server.label,
          methods: options.methods.join(','),
          istag: options.istag,
          preview: options.preview,
          maxConnections: options.maxConnections,
          ttl: options.ttlSeconds,
        },
        'ICAP OPTIONS',
      );
      return { kind: 'ok', options };
    } catch (err) {
      const message = err instanceof IcapProtocolError ? err.message : String(err);
      server.lastError = message;
      this.o.log.warn(
        { event: 'icap.options_failed', server: server.label, status: r.head.status, reason: message },
        'ICAP OPTIONS answer not usable',
      );
      return { kind: 'failed', message, status: r.head.status };
    }
  }

  /** A connection to the server: an idle one, a new one within the limit, or the next one released. */
  private async acquire(server: IcapServer, o: ExchangeOptions): Promise<Acquired> {
    for (;;) {
      if (o.signal?.aborted === true) return { kind: 'aborted' };
      if (this.now() >= o.deadline) return { kind: 'timeout' };
      while (server.idle.length > 0) {
        const conn = server.idle.pop() as IcapConnection;
        this.clearIdleTimer(conn);
        if (!conn.closed) {
          server.active++;
          return { kind: 'conn', conn, reused: true };
        }
      }
      if (server.open < this.limit(server)) {
        server.active++;
        const r = await connectIcap(server.url, {
          connectTimeoutMs: this.o.connectTimeoutMs,
          deadline: o.deadline,
          ...(o.signal !== undefined ? { signal: o.signal } : {}),
          now: this.now,
          ...(server.url.tls ? { tls: this.o.tls ?? { rejectUnauthorized: true } } : {}),
        });
        if (r.kind !== 'connected') {
          server.active--;
          this.wake(server);
          return r;
        }
        return { kind: 'conn', conn: r.conn, reused: false };
      }
      await this.waitForSlot(server, o);
    }
  }

  private release(server: IcapServer, conn: IcapConnection, reusable: boolean): void {
    server.active--;
    if (
      reusable &&
      !this.closed &&
      this.o.keepAliveMs > 0 &&
      !conn.closed &&
      server.open < this.limit(server)
    ) {
      server.idle.push(conn);
      const t = setTimeout(() => {
        const i = server.idle.indexOf(conn);
        if (i >= 0) server.idle.splice(i, 1);
        this.dropIdle(conn);
      }, this.o.keepAliveMs);
      t.unref();
      this.idleTimers.set(conn, t);
    } else {
      conn.destroy();
    }
    this.wake(server);
  }

  private dropIdle(conn: IcapConnection): void {
    this.clearIdleTimer(conn);
    conn.destroy();
  }

  private clearIdleTimer(conn: IcapConnection): void {
    const t = this.idleTimers.get(conn);
    if (t !== undefined) clearTimeout(t);
    this.idleTimers.delete(conn);
  }

  private wake(server: IcapServer): void {
    server.waiters.shift()?.();
  }

  private waitForSlot(server: IcapServer, o: ExchangeOptions): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        o.signal?.removeEventListener('abort', done);
        const i = server.waiters.indexOf(done);
        if (i >= 0) server.waiters.splice(i, 1);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, o.deadline - this.now()));
      o.signal?.addEventListener('abort', done, { once: true });
      server.waiters.push(done);
    });
  }
}

/** The shared fetch, or timeout/aborted for this caller when its own deadline or signal comes first. */
function raceAbort(
  p: Promise<OptionsResult>,
  signal: AbortSignal | undefined,
  deadline: number,
  now: () => number,
): Promise<OptionsResult> {
  if (signal?.aborted === true) return Promise.resolve({ kind: 'aborted' });
  return new Promise((resolve) => {
    const finish = (r: OptionsResult): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(r);
    };
    const onAbort = (): void => finish({ kind: 'aborted' });
    const timer = setTimeout(() => finish({ kind: 'timeout' }), Math.max(0, deadline - now()));
    signal?.addEventListener('abort', onAbort, { once: true });
    void p.then(finish);
  });
}
