import { Counter, Registry } from 'prom-client';
import { request } from 'undici';
import { expect, it } from 'vitest';
import { AdminServer } from '../../src/admin/server.js';
import { silentLogger } from '../../src/core/logger.js';

it('serves /healthz, /readyz, /metrics and added routes on a loopback port', async () => {
  const registry = new Registry();
  new Counter({ name: 'sandgate_test_total', help: 'test', registers: [registry] }).inc(3);
  let ready = false;
  let stateUp = true;
  const admin = new AdminServer({
    registry,
    log: silentLogger,
    ready: () => ready,
    checks: [
      { name: 'state', check: () => Promise.resolve(stateUp) },
      { name: 'thrower', check: () => (stateUp ? Promise.resolve(true) : Promise.reject(new Error('x'))) },
    ],
  });
  admin.route({
    method: 'POST',
    path: '/quarantine/release',
    handler: () => ({ status: 202, body: 'queued\n' }),
  });
  const { port } = await admin.listen('127.0.0.1', 0);
  const get = async (path: string, method: 'GET' | 'POST' = 'GET') => {
    const r = await request(`http://127.0.0.1:${port}${path}`, { method });
    return { status: r.statusCode, body: await r.body.text(), type: r.headers['content-type'] };
  };
  try {
    expect(await get('/healthz')).toMatchObject({ status: 200, body: 'ok\n' });
    expect((await get('/readyz')).status).toBe(503);
    ready = true;
    expect(await get('/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
    stateUp = false;
    // Each failing check is named; one that throws counts as failing.
    expect(await get('/readyz')).toMatchObject({ status: 503, body: 'not ready: state, thrower\n' });
    stateUp = true;
    expect((await get('/readyz')).status).toBe(200);
    const m = await get('/metrics');
    expect(m.status).toBe(200);
    expect(m.type).toMatch(/^text\/plain/);
    expect(m.body).toMatch(/^sandgate_test_total 3$/m);
    expect((await get('/quarantine/release', 'POST')).status).toBe(202);
    expect((await get('/quarantine/release')).status).toBe(405);
    expect((await get('/nope')).status).toBe(404);
  } finally {
    await admin.close();
  }
});
