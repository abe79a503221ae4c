import { afterEach, describe, expect, it } from 'vitest';
import type { NextHopConnector, NextHopSession } from '../../../src/smtp/next-hop.js';
import { SessionPool } from '../../../src/smtp/queue/session-pool.js';

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

    // The connection completes later: it is kept for the next caller, not lost or leaked.
    const late = fakeSession('late');
    hop.pending[1]?.resolve(late);
    await Promise.resolve();
    p.release(a, true);
    const third = await p.acquire();
    expect([a, late]).toContain(third);
    expect(late.closed).toBe(false);
    expect(hop.pending).toHaveLength(2);
  });

  it('waiting callers are served in order, and a failed connection fails only a caller still waiting', async () => {
    const hop = slowConnector();
    const p = pool(hop);
    const w1 = p.acquire();
    const w2 = p.acquire();
    const s = fakeSession('s');
    p.release(s, true);
    expect(await w1).toBe(s);
    hop.pending[0]?.reject(new Error('refused'));
    hop.pending[1]?.reject(new Error('refused'));
    await expect(w2).rejects.toThrow('refused');
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
});
