import type { NextHopConnector, NextHopSession } from './next-hop.js';

/**
 * Next-hop sessions reused across transactions (the inline relay's, or one per busy queue worker
 * slot). A session idle for longer than `idleMs` is closed with QUIT; a session that failed is
 * never returned to the pool.
 */
export class SessionPool {
  private readonly idle: Array<{ session: NextHopSession; since: number }> = [];
  /** Callers waiting for a session, oldest first: each takes the next one given back or connected. */
  private readonly waiting: Array<{
    resolve: (session: NextHopSession) => void;
    reject: (err: Error) => void;
  }> = [];
  /** Connections being made; never more than callers waiting (a stalled next hop piles none up). */
  private connecting = 0;
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
   * An idle session, else the next session given back or connected, whichever comes first. A
   * next hop whose listener is full (Postfix's re-injection smtpd at its maxproc, all held by our
   * sessions) greets a new connection only when one of ours ends, which a pooled session never
   * does: the caller must not wait for that greeting while sessions are given back. A connection
   * is made only while fewer are being made than callers wait; one that completes joins the pool
   * (or serves the oldest caller), one that fails fails the oldest caller.
   */
  async acquire(signal?: AbortSignal): Promise<NextHopSession> {
    while (this.idle.length > 0) {
      const s = this.idle.pop()?.session;
      if (s?.usable) return s;
      await s?.close().catch(() => undefined);
    }
    return new Promise<NextHopSession>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (this.connecting < this.waiting.length) this.connect(signal);
    });
  }

  /**
   * Gives a session back: to the oldest waiting caller, else to the idle list. `healthy` false, or
   * a session bound to one client's XCLIENT identity (not `reusable`), closes it instead, and so
   * does a closed pool when nobody waits.
   */
  release(session: NextHopSession, healthy: boolean): void {
    if (!healthy || !session.usable || !session.reusable) {
      void session.close().catch(() => undefined);
      return;
    }
    const next = this.waiting.shift();
    if (next !== undefined) next.resolve(session);
    else if (this.closed) void session.close().catch(() => undefined);
    else this.idle.push({ session, since: Date.now() });
  }

  private connect(signal?: AbortSignal): void {
    this.connecting++;
    this.connector.connect(signal).then(
      (session) => {
        this.connecting--;
        this.release(session, true);
      },
      (err: unknown) => {
        this.connecting--;
        this.waiting.shift()?.reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
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
