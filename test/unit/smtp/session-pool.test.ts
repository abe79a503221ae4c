import { afterEach, describe, expect, it } from 'vitest';
import type { NextHopConnector, NextHopSession } from '../../../src/smtp/next-hop.js';
import { SessionPool } from '../../../src/smtp/session-pool.js';

/** A session that only knows whether it was closed (the pool never sends commands). */
function fakeSession(name: string): NextHopSession & { readonly name: string; closed: boolean } {
  const s = {
    name,
    closed: false,
    get usable() {
      return !s.closed;
    },
    reusable: true,
    close: () => {
      s.closed = true;
      return Promise.resolve();
    },
  };
  return s as unknown as NextHopSession & { readonly name: string; closed: boolean };
}

/** A next hop whose connections complete only when the test says so (a listener that is full). */
function slowConnector(): NextHopConnector & {
  readonly pending: Array<{ resolve: (s: NextHopSession) => void; reject: (e: Error) => void }>;
} {
  const pending: Array<{ resolve: (s: NextHopSession) => void; reject: (e: Error) => void }> = [];
  return {
    describe: 'fake',
    pending,
    connect: () => new Promise<NextHopSession>((resolve, reject) => pending.push({ resolve, reject })),
  };
}

const pools: SessionPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
});
function pool(connector: NextHopConnector): SessionPool {
  const p = new SessionPool(connector, 60_000);
  pools.push(p);
  return p;
}

describe('SessionPool', () => {
  it('a caller waiting for a connection takes a session given back first; the late connection joins the pool', async () => {
    const hop = slowConnector();
    const p = pool(hop);
    const a = fakeSession('a');
    const first = p.acquire();
    hop.pending[0]?.resolve(a);
    expect(await first).toBe(a);

    // The next hop is full: this connection is not greeted until one of ours ends.
    const second = p.acquire();
    expect(hop.pending).toHaveLength(2);
    p.release(a, true);
    expect(await second).toBe(a);

    // While that connection is still being made, another caller starts none of its own.
    const third = p.acquire();
    expect(hop.pending).toHaveLength(2);
    // It completes: it serves the waiting caller; nothing is lost or left open.
    const late = fakeSession('late');
    hop.pending[1]?.resolve(late);
    expect(await third).toBe(late);
    p.release(a, true);
    p.release(late, true);
    expect(await p.acquire()).toBe(late);
    expect(await p.acquire()).toBe(a);
    expect(hop.pending).toHaveLength(2);
    expect([a.closed, late.closed]).toEqual([false, false]);
  });

  it('connections made never outnumber the callers waiting, and a failed one fails the oldest caller', async () => {
    const hop = slowConnector();
    const p = pool(hop);
    const callers = [p.acquire(), p.acquire(), p.acquire()];
    expect(hop.pending).toHaveLength(3);
    const s = fakeSession('s');
    p.release(s, true);
    expect(await callers[0]).toBe(s);
    hop.pending[0]?.reject(new Error('refused'));
    await expect(callers[1]).rejects.toThrow('refused');
    const t = fakeSession('t');
    hop.pending[1]?.resolve(t);
    expect(await callers[2]).toBe(t);
    // The third connection lands in the pool for the next caller, who starts none.
    const u = fakeSession('u');
    hop.pending[2]?.resolve(u);
    await Promise.resolve();
    expect(await p.acquire()).toBe(u);
    expect(hop.pending).toHaveLength(3);
  });

  it('an unhealthy session is closed, not handed to a waiting caller', async () => {
    const hop = slowConnector();
    const p = pool(hop);
    const waiting = p.acquire();
    const bad = fakeSession('bad');
    p.release(bad, false);
    expect(bad.closed).toBe(true);
    const fresh = fakeSession('fresh');
    hop.pending[0]?.resolve(fresh);
    expect(await waiting).toBe(fresh);
  });

  it('a closed pool still serves a caller that was waiting, and closes what nobody waits for', async () => {
    const hop = slowConnector();
    const p = pool(hop);
    const waiting = p.acquire();
    await p.close();
    const s = fakeSession('s');
    hop.pending[0]?.resolve(s);
    expect(await waiting).toBe(s);
    p.release(s, true);
    expect(s.closed).toBe(true);
  });
});
