import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../core/logger.js';

/** What a route handler gets; `url` is parsed against the request's own host. */
export interface AdminRequest {
  readonly method: string;
  readonly url: URL;
  readonly headers: http.IncomingHttpHeaders;
  readonly raw: http.IncomingMessage;
}

export interface AdminResponse {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body: string | Buffer;
}

export type AdminHandler = (req: AdminRequest) => Promise<AdminResponse> | AdminResponse;

/** One route: method + exact path. Later front ends (the quarantine API) add theirs with `route()`. */
export interface AdminRoute {
  readonly method: 'GET' | 'POST' | 'DELETE' | 'PUT';
  readonly path: string;
  readonly handler: AdminHandler;
}

export interface AdminServerOptions {
  readonly registry: Registry;
  readonly log: Logger;
  /** false makes /readyz answer 503 (starting, shutting down, next hop unknown). */
  readonly ready: () => boolean | Promise<boolean>;
  /** Dependencies /readyz checks as well (the state backend): a failing one is named in the 503 body. */
  readonly checks?: readonly ReadyCheck[];
}

/** A dependency /readyz checks: `name` is what the 503 body says (`not ready: state`). */
export interface ReadyCheck {
  readonly name: string;
  check(): Promise<boolean>;
}

const text = (status: number, body: string): AdminResponse => ({
  status,
  headers: { 'content-type': 'text/plain; charset=utf-8' },
  body,
});

/**
 * The admin HTTP port (loopback by default): /healthz (the process answers), /readyz (it can take
 * mail), /metrics (Prometheus). A route table, so authenticated routes can be added later.
 */
export class AdminServer {
  private readonly routes = new Map<string, AdminRoute>();
  private readonly server: http.Server;

  constructor(private readonly options: AdminServerOptions) {
    this.route({ method: 'GET', path: '/healthz', handler: () => text(200, 'ok\n') });
    this.route({
      method: 'GET',
      path: '/readyz',
      handler: () => this.readyz(),
    });
    this.route({
      method: 'GET',
      path: '/metrics',
      handler: async () => ({
        status: 200,
        headers: { 'content-type': options.registry.contentType },
        body: await options.registry.metrics(),
      }),
    });
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
  }

  /** Adds or replaces a route. */
  route(r: AdminRoute): void {
    this.routes.set(`${r.method} ${r.path}`, r);
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const a = this.server.address() as AddressInfo;
        this.options.log.info(
          { event: 'admin.listening', host: a.address, port: a.port },
          'admin port listening',
        );
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  /** 200 when the process is ready and every check passes; else 503 naming the failing checks. */
  private async readyz(): Promise<AdminResponse> {
    if (!(await this.options.ready())) return text(503, 'not ready\n');
    const checks = this.options.checks ?? [];
    const passed = await Promise.all(checks.map((c) => c.check().catch(() => false)));
    const failed = checks.filter((_, i) => passed[i] !== true).map((c) => c.name);
    return failed.length === 0 ? text(200, 'ready\n') : text(503, `not ready: ${failed.join(', ')}\n`);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let out: AdminResponse;
    try {
      const url = new URL(req.url ?? '/', 'http://admin.invalid');
      const method = req.method ?? 'GET';
      const route = this.routes.get(`${method === 'HEAD' ? 'GET' : method} ${url.pathname}`);
      if (route === undefined) {
        const known = [...this.routes.values()].some((r) => r.path === url.pathname);
        out = known ? text(405, 'method not allowed\n') : text(404, 'not found\n');
      } else {
        out = await route.handler({ method, url, headers: req.headers, raw: req });
      }
    } catch (err) {
      this.options.log.error(
        { event: 'admin.error', err: err instanceof Error ? err.message : String(err) },
        'admin route failed',
      );
      out = text(500, 'internal error\n');
    }
    // Requests we do not read (a GET with a body) are drained so the connection can be reused.
    req.resume();
    res.writeHead(out.status, { 'cache-control': 'no-store', ...out.headers });
    res.end(req.method === 'HEAD' ? undefined : out.body);
  }
}
