import { readFileSync } from 'node:fs';
import type { NextHop, RelayConfig } from '../../core/config/relay.js';
import { createConnector, type NextHopConnector, type NextHopSession } from '../next-hop.js';

/** The next-hop connector for the queue worker, with the same options the inline relay uses. */
export function queueConnector(relay: RelayConfig, hop: NextHop): NextHopConnector {
  const o = relay.nextHopOptions;
  const pass = o.authPasswordFile !== undefined ? readFileSync(o.authPasswordFile, 'utf8').trim() : undefined;
  return createConnector(hop, {
    name: relay.hostname,
    timeout: o.timeout,
    tls: o.tls,
    ...(o.caFile !== undefined ? { ca: readFileSync(o.caFile) } : {}),
    ...(o.servername !== undefined ? { servername: o.servername } : {}),
    ...(o.authUser !== undefined && pass !== undefined ? { auth: { user: o.authUser, pass } } : {}),
  });
}

/**
 * Next-hop sessions reused across transactions (the inline relay's, or one per busy queue worker
 * slot). A session idle for longer than `idleMs` is closed with QUIT; a session that failed is
 * never returned to the pool.
 */
export class SessionPool {
  private readonly idle: Array<{ session: NextHopSession; since: number }> = [];
  /** Callers waiting for a session; each takes the first one given back or newly connected. */
  private readonly waiting: Array<(session: NextHopSession) => boolean> = [];
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly connector: NextHopConnector,
    private readonly idleMs: number,
  ) {
    this.sweeper = setInterval(() => this.sweep(), Math.max(100, Math.min(idleMs, 5000)));
    this.sweeper.unref();
  }

  /**
   * An idle session, else a new connection, unless a session is given back first: then that one.
   * A next hop whose listener is full (Postfix's re-injection smtpd at its maxproc, all held by
   * our sessions) greets a new connection only when one of ours ends, which a pooled session
   * never does; without this the transaction would wait for the greeting timeout. A connection
   * that arrives after its caller was served joins the pool.
   */
  async acquire(signal?: AbortSignal): Promise<NextHopSession> {
    while (this.idle.length > 0) {
      const s = this.idle.pop()?.session;
      if (s?.usable) return s;
      await s?.close().catch(() => undefined);
    }
    return new Promise<NextHopSession>((resolve, reject) => {
      let served = false;
      const leave = (): boolean => {
        if (served) return false;
        served = true;
        const i = this.waiting.indexOf(take);
        if (i >= 0) this.waiting.splice(i, 1);
        return true;
      };
      const take = (session: NextHopSession): boolean => {
        if (!leave()) return false;
        resolve(session);
        return true;
      };
      this.waiting.push(take);
      this.connector.connect(signal).then(
        (session) => {
          if (!take(session)) this.release(session, true);
        },
        (err: unknown) => {
          if (leave()) reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  /**
   * Gives a session back; `healthy` false, a closed pool, or a session bound to one client's
   * XCLIENT identity (not `reusable`) closes it instead.
   */
  release(session: NextHopSession, healthy: boolean): void {
    if (!healthy || !session.usable || !session.reusable || this.closed) {
      void session.close().catch(() => undefined);
      return;
    }
    for (let next = this.waiting.shift(); next !== undefined; next = this.waiting.shift()) {
      if (next(session)) return;
    }
    this.idle.push({ session, since: Date.now() });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    const all = this.idle.splice(0);
    await Promise.all(all.map((e) => e.session.close().catch(() => undefined)));
  }

  private sweep(): void {
    const cutoff = Date.now() - this.idleMs;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const e = this.idle[i];
      if (e !== undefined && (e.since < cutoff || !e.session.usable)) {
        this.idle.splice(i, 1);
        void e.session.close().catch(() => undefined);
      }
    }
  }
}
