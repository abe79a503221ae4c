import type pg from 'pg';
import type { Logger } from '../../core/logger.js';
import { connectClient, type PgConnection } from './db.js';

export const INFLIGHT_CHANNEL = 'sandgate_inflight';

/**
 * One LISTEN connection per process (not a pool client: it stays subscribed), opened on the first
 * wait. A notification wakes the waiters of its key. When the connection fails it is dropped and
 * opened again by the next wait; notifications sent meanwhile are lost, so waiters never rely on
 * one alone: they wait at most maxWaitMs (<= 5 s) and the caller re-checks after every return.
 */
export class PgListener {
  private client: Promise<pg.Client> | undefined;
  private readonly waiters = new Map<string, Set<() => void>>();
  private closed = false;

  constructor(
    private readonly connection: PgConnection,
    private readonly log: Logger,
  ) {}

  /** Resolves on a notification for `payload`, after maxWaitMs, or when `signal` aborts. */
  async wait(payload: string, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    if (this.closed || signal?.aborted === true) return;
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    const set = this.waiters.get(payload) ?? new Set<() => void>();
    set.add(wake);
    this.waiters.set(payload, set);
    const timer = setTimeout(wake, Math.max(0, maxWaitMs));
    signal?.addEventListener('abort', wake, { once: true });
    try {
      // A failure to listen only costs the wake-up: the wait ends by its timer.
      this.ensure().catch(() => undefined);
      await woken;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', wake);
      set.delete(wake);
      if (set.size === 0 && this.waiters.get(payload) === set) this.waiters.delete(payload);
    }
  }

  private ensure(): Promise<pg.Client> {
    if (this.client !== undefined) return this.client;
    const opening: Promise<pg.Client> = (async () => {
      const client = await connectClient({ ...this.connection, queryTimeoutMs: 0 }, this.log);
      let dropped = false;
      const drop = (): void => {
        // 'error' and then 'end' both come for one failure; the second must not forget the
        // connection a waiter may have opened in between (it would stay open past close()).
        if (dropped) return;
        dropped = true;
        if (this.client === opening) this.client = undefined;
        client.end().catch(() => undefined);
        // Whoever waits re-checks now: what was notified while we were away is lost.
        this.wakeAll();
      };
      client.on('error', drop);
      client.on('end', () => {
        if (!this.closed) drop();
      });
      client.on('notification', (n) => {
        if (n.channel !== INFLIGHT_CHANNEL || n.payload === undefined) return;
        for (const w of this.waiters.get(n.payload) ?? []) w();
      });
      try {
        await client.query(`LISTEN ${INFLIGHT_CHANNEL}`);
      } catch (err) {
        dropped = true;
        client.end().catch(() => undefined);
        throw err;
      }
      // Re-check after every (re)connect: a release before LISTEN was not heard.
      this.wakeAll();
      return client;
    })().catch((err: unknown) => {
      if (this.client === opening) this.client = undefined;
      this.log.warn({ event: 'state.listen_failed', err }, 'cannot listen for in-flight wake-ups; polling');
      throw err;
    });
    this.client = opening;
    return opening;
  }

  private wakeAll(): void {
    for (const set of this.waiters.values()) for (const w of set) w();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wakeAll();
    const c = this.client;
    this.client = undefined;
    if (c !== undefined) await (await c.catch(() => undefined))?.end().catch(() => undefined);
  }
}
