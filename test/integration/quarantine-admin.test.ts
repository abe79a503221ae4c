import { afterEach, describe, expect, it } from 'vitest';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { tempDir } from '../support/tmp.js';
import {
  blockedMail,
  startAdmin,
  startHarness,
  type AdminHandle,
  type Harness,
} from './quarantine-harness.js';

let harness: Harness | undefined;
let admin: AdminHandle | undefined;
let sink: SmtpSink | undefined;
afterEach(async () => {
  expect(await admin?.stop()).toBe(admin ? 0 : undefined);
  await harness?.close();
  await sink?.close();
  harness = admin = sink = undefined;
});

describe('quarantine admin API', () => {
  it('refuses requests without the token, with a wrong one, and serves list/show/release/delete with it', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir);
    const first = (await harness.evaluate(blockedMail())).quarantineId!;
    const second = (await harness.evaluate(blockedMail({ tool: 'other\n', subject: 'two' }))).quarantineId!;
    admin = await startAdmin(dir, [`quarantine.release.target=127.0.0.1:${sink.port}`]);
    const api = (path: string, init: RequestInit = {}, token: string | null = admin!.token) =>
      fetch(`${admin!.url}${path}`, {
        ...init,
        headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) },
      });

    for (const [path, init] of [
      ['/api/quarantine', {}],
      [`/api/quarantine/item?id=${first}`, {}],
      [`/api/quarantine/item?id=${first}`, { method: 'DELETE' }],
      ['/api/quarantine/release', { method: 'POST', body: JSON.stringify({ id: first }) }],
    ] as const) {
      const none = await api(path, init, null);
      expect(none.status).toBe(401);
      expect(none.headers.get('www-authenticate')).toBe('Bearer');
      expect(((await none.json()) as { code: string }).code).toBe('ERR_UNAUTHORISED');
      expect((await api(path, init, `${admin.token}x`)).status).toBe(401);
      expect((await api(path, init, admin.token.slice(1))).status).toBe(401);
    }
    expect(await harness.service.list()).toHaveLength(2);
    expect(sink.messages).toHaveLength(0);

    const list = (await (await api('/api/quarantine?verdict=malicious')).json()) as {
      items: Array<{ id: string }>;
    };
    expect(list.items.map((i) => i.id).sort()).toEqual([first, second].sort());
    const filtered = (await (await api('/api/quarantine?sender=nobody')).json()) as { items: unknown[] };
    expect(filtered.items).toEqual([]);

    const shown = (await (await api(`/api/quarantine/item?id=${first}`)).json()) as {
      attachments: Array<{ filename?: string; blocking: boolean }>;
    };
    expect(shown.attachments.find((a) => a.filename === 'tool.exe')?.blocking).toBe(true);
    const missing = await api('/api/quarantine/item?id=nope');
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { code: string }).code).toBe('ERR_QUARANTINE_NOT_FOUND');

    const released = await api('/api/quarantine/release', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: first, by: 'alice' }),
    });
    expect(released.status).toBe(200);
    await sink.waitFor(1);
    expect((await harness.service.get(first)).releasedBy).toMatch(/^admin-api:alice@/);

    // Malformed requests are the client's fault: 400 ERR_BAD_REQUEST, never a configuration error.
    for (const [path, init] of [
      ['/api/quarantine?since=yesterday-ish', {}],
      ['/api/quarantine/release', { method: 'POST', body: '[1, 2]' }],
      ['/api/quarantine/release', { method: 'POST', body: '{"id": ' }],
      ['/api/quarantine/release', { method: 'POST', body: 'x'.repeat(64 * 1024 + 100) }],
      ['/api/quarantine/release', { method: 'POST', body: JSON.stringify({ id: second, to: 'a@b' }) }],
    ] as const) {
      const bad = await api(path, init);
      expect(bad.status, path).toBe(400);
      expect(((await bad.json()) as { code: string }).code).toBe('ERR_BAD_REQUEST');
    }
    expect(sink.messages).toHaveLength(1);

    sink.behaviour.refuseData = [451, '4.3.0 try later'];
    const failed = await api('/api/quarantine/release', {
      method: 'POST',
      body: JSON.stringify({ id: second }),
    });
    expect(failed.status).toBe(502);
    expect(((await failed.json()) as { code: string }).code).toBe('ERR_QUARANTINE_RELEASE');
    expect((await harness.service.get(second)).releasedAt).toBeUndefined();

    expect((await api(`/api/quarantine/item?id=${second}`, { method: 'DELETE' })).status).toBe(200);
    expect((await harness.service.list()).map((i) => i.id)).toEqual([first]);

    const page = await fetch(`${admin.url}/quarantine`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(await page.text()).toContain('<title>sandgate quarantine</title>');
    expect((await fetch(`${admin.url}/healthz`)).status).toBe(200);
  });

  it('does not start without admin.tokenFile', async () => {
    const dir = tempDir();
    const { memoryIo } = await import('./quarantine-harness.js');
    const mem = memoryIo(dir);
    const { run } = await import('../../src/cli/commands/admin.js');
    const code = await run(['--set', `stateDir=${dir}`, '--set', 'admin.listen=127.0.0.1:0'], mem.io, {
      stop: Promise.resolve(),
    });
    expect(code).toBe(2);
    expect(mem.stderr()).toContain('[ERR_CONFIG_INVALID]');
  });
});
