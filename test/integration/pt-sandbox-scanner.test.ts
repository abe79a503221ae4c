import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Finding } from '../../src/core/outcome.js';
import { EICAR, FAKE_PT_TOKEN, startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { createPtClient } from '../../src/cli/compose/pt-sandbox.js';
import { directContext } from '../support/memo-harness.js';
import {
  LogCapture,
  makeScanner,
  message,
  openTestState,
  simpleMail,
  testConfig,
  type TestState,
} from '../support/pt-sandbox.js';

let sb: FakePtSandbox;
let state: TestState;

beforeAll(async () => {
  sb = await startFakePtSandbox({ taskDurationMs: 30 });
});
afterAll(async () => {
  await sb.close();
});
beforeEach(() => {
  state = openTestState();
});
afterEach(async () => {
  await state.close();
});

const soon = (ms = 10_000) => Date.now() + ms;

async function scanText(
  text: string,
  overrides: Record<string, unknown> = {},
  log?: LogCapture,
): Promise<Finding> {
  const scanner = makeScanner(testConfig(sb.url, overrides), state, log ? { log: log.log } : {});
  try {
    return await scanner.scan(
      message(text),
      directContext({ deadline: soon(), ...(log ? { log: log.log } : {}) }),
    );
  } finally {
    await scanner.close();
  }
}

describe('PT Sandbox mapping over a real socket (analysis mode)', () => {
  it.each([
    ['CLEAN', { kind: 'clean' }],
    ['UNWANTED', { kind: 'suspicious', threats: ['Fake.Unwanted.Marker'] }],
    ['DANGEROUS', { kind: 'malicious', threats: ['Fake.Dangerous.Marker'] }],
    ['PARTIAL', { kind: 'clean', partial: true }],
    ['PARTIAL-DANGEROUS', { kind: 'malicious', partial: true, threats: ['Fake.Dangerous.Partial'] }],
    ['ENCRYPTED', { kind: 'failed', reason: 'encrypted' }],
    ['UNSCANNED', { kind: 'failed', reason: 'internal' }],
    ['UNKNOWN', { kind: 'failed', reason: 'protocol' }],
    ['NOVERDICT', { kind: 'failed', reason: 'internal' }],
  ] as const)('X-Test-Verdict %s', async (verdict, expected) => {
    const f = await scanText(simpleMail('hello', { extraHeaders: [`X-Test-Verdict: ${verdict}`] }));
    expect(f).toMatchObject(expected);
    if (f.kind === 'clean' && !('partial' in expected)) expect(f.partial).toBeUndefined();
    expect(f.details?.scanId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('EICAR in a message is malicious with the detection name from the report', async () => {
    const f = await scanText(simpleMail(EICAR));
    expect(f).toMatchObject({ kind: 'malicious', threats: ['EICAR-Test-File'] });
  });

  it('source mode: /scan/checkFile with query parameters, polled with /scan/getStatus', async () => {
    const before = { check: sb.counters['scan/checkFile'] ?? 0, status: sb.counters['scan/getStatus'] ?? 0 };
    const f = await scanText(
      simpleMail('x', { extraHeaders: ['X-Test-Verdict: UNWANTED'], subject: 'Счёт март' }),
      {
        mode: 'source',
        fileNameTemplate: '{subject}.eml',
        analysis: { passwordsForUnpack: ['infected'] },
      },
    );
    expect(f).toMatchObject({ kind: 'suspicious', threats: ['Fake.Unwanted.Marker'] });
    expect(sb.counters['scan/checkFile']).toBe(before.check + 1);
    expect(sb.counters['scan/getStatus']).toBeGreaterThan(before.status);
    const q = sb.checkFileQueries.at(-1)!;
    expect(q.get('async_result')).toBe('true');
    expect(q.get('file_name')).toBe('Счёт март.eml');
    expect(JSON.parse(q.get('passwords_for_unpack')!)).toEqual(['infected']);
  });
});

describe('request hygiene', () => {
  it('sends Content-Length, never chunked, and the fake refuses chunked uploads', async () => {
    const n = sb.uploads.length;
    const text = simpleMail('a'.repeat(300_000));
    await scanText(text);
    const up = sb.uploads.slice(n);
    expect(up).toHaveLength(1);
    expect(up[0]?.transferEncoding).toBeUndefined();
    expect(Number(up[0]?.contentLength)).toBe(Buffer.byteLength(text.replace(/\n/g, '\r\n')));
    // The fake really refuses chunked bodies (so the assertion above is meaningful).
    const res = await fetch(`${sb.url}/api/v1/storage/uploadScanFile`, {
      method: 'POST',
      headers: { 'x-api-key': FAKE_PT_TOKEN },
      body: new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode('abc'));
          c.close();
        },
      }),
      duplex: 'half',
    });
    expect(res.status).toBe(411);
  });

  it('never sends null fields; sends the operator options', async () => {
    const n = sb.createBodies.length;
    await scanText(simpleMail('opts'), {
      priority: 4,
      analysis: {
        depth: 2,
        passwordsForUnpack: ['infected', '123'],
        sandbox: { enabled: true, imageId: 'win10-1607-x64', duration: '60s' },
      },
    });
    const body = sb.createBodies[n] as Record<string, unknown>;
    expect(JSON.stringify(body)).not.toContain('null');
    expect(body).toMatchObject({
      async_result: true,
      priority: 4,
      options: {
        analysis_depth: 2,
        passwords_for_unpack: ['infected', '123'],
        url_extract_enabled: true,
        sandbox: { enabled: true, image_id: 'win10-1607-x64', analysis_duration: 60 },
      },
    });
    // The fake refuses nulls (400), so a regression would show up as a failed scan.
    const res = await fetch(`${sb.url}/api/v1/analysis/createScanTask`, {
      method: 'POST',
      headers: { 'x-api-key': FAKE_PT_TOKEN, 'content-type': 'application/json' },
      body: JSON.stringify({ file_uri: 'x', file_name: null }),
    });
    expect(res.status).toBe(400);
  });

  it('file_name comes from the template', async () => {
    const n = sb.createBodies.length;
    const msg = message(simpleMail('x', { subject: '=?UTF-8?B?0KHRh9GR0YI=?= march' }));
    const scanner = makeScanner(testConfig(sb.url, { fileNameTemplate: '{msgId} {subject}.eml' }), state);
    await scanner.scan(msg, directContext({ deadline: soon() }));
    await scanner.close();
    expect((sb.createBodies[n] as { file_name: string }).file_name).toBe(`${msg.msgId} Счёт march.eml`);
  });
});

describe('client lifecycle', () => {
  it('connects at the first call, and a call after close() is refused without a request', async () => {
    const log = new LogCapture();
    const deps = { env: { PT_TOKEN: FAKE_PT_TOKEN }, log: log.log };
    // Closing a client that never called anything has nothing to close.
    await createPtClient(testConfig(sb.url), deps).close();
    const client = createPtClient(testConfig(sb.url), deps);
    const before = sb.counters['maintenance/checkHealth'] ?? 0;
    expect(await client.checkHealth()).toBeTruthy();
    expect(sb.counters['maintenance/checkHealth']).toBe(before + 1);
    await client.close();
    await expect(client.checkHealth()).rejects.toMatchObject({ code: 'ERR_SCANNER_UNAVAILABLE' });
    expect(sb.counters['maintenance/checkHealth']).toBe(before + 1);
  });
});

describe('errors', () => {
  it('a wrong token: failed(unavailable), a log line naming the token, and the token never logged', async () => {
    const log = new LogCapture();
    const scanner = makeScanner(testConfig(sb.url), state, { log: log.log, token: 'wrong-token-SECRET-777' });
    const f = await scanner.scan(message(simpleMail('x')), directContext({ deadline: soon(), log: log.log }));
    await scanner.close();
    expect(f).toMatchObject({ kind: 'failed', reason: 'unavailable' });
    const auth = log.records.find((r) => r.event === 'pt.auth_failed');
    expect(auth).toMatchObject({ status: 401, endpoint: 'storage/uploadScanFile' });
    expect(String(auth?.msg)).toMatch(/token is wrong/);
    expect(log.lines.join('\n')).not.toContain('wrong-token-SECRET-777');
  });

  it('a token without the permission (403): failed(unavailable)', async () => {
    const limited = await startFakePtSandbox({ tokens: { [FAKE_PT_TOKEN]: ['analysis'] } });
    try {
      const log = new LogCapture();
      const scanner = makeScanner(testConfig(limited.url, { mode: 'source' }), state, { log: log.log });
      const f = await scanner.scan(
        message(simpleMail('x')),
        directContext({ deadline: soon(), log: log.log }),
      );
      await scanner.close();
      expect(f).toMatchObject({ kind: 'failed', reason: 'unavailable' });
      expect(log.records.find((r) => r.event === 'pt.auth_failed')).toMatchObject({
        status: 403,
        endpoint: 'scan/checkFile',
      });
    } finally {
      await limited.close();
    }
  });

  it('413 from the appliance: failed(too-large)', async () => {
    const small = await startFakePtSandbox({ maxUploadSize: 1000 });
    try {
      const scanner = makeScanner(testConfig(small.url), state);
      const f = await scanner.scan(
        message(simpleMail('b'.repeat(5000))),
        directContext({ deadline: soon() }),
      );
      await scanner.close();
      expect(f).toMatchObject({ kind: 'failed', reason: 'too-large' });
      expect(small.uploads[0]?.refused).toBe(413);
    } finally {
      await small.close();
    }
  });

  it('the client-side cap gives failed(too-large) before uploading', async () => {
    const n = sb.counters['storage/uploadScanFile'] ?? 0;
    const f = await scanText(simpleMail('c'.repeat(5000)), { maxUploadSize: 1024 });
    expect(f).toMatchObject({ kind: 'failed', reason: 'too-large' });
    expect(sb.counters['storage/uploadScanFile'] ?? 0).toBe(n);
  });

  it('3 consecutive 5xx (non-JSON bodies) then success: a verdict, one task', async () => {
    const tasks = sb.tasksCreated();
    sb.failNext(3, { endpoint: 'storage/uploadScanFile', status: 502 });
    const log = new LogCapture();
    const f = await scanText(
      simpleMail('retry me', { extraHeaders: ['X-Test-Verdict: DANGEROUS'] }),
      {},
      log,
    );
    expect(f).toMatchObject({ kind: 'malicious' });
    expect(sb.tasksCreated()).toBe(tasks + 1);
    expect(
      log.events().filter((e) => e === 'pt.retry' || e === 'pt.submit_retry').length,
    ).toBeGreaterThanOrEqual(3);
    // Logged at trace level through submit, retries, polls and the report: the token is never there.
    expect(log.events()).toContain('pt.task_verdict');
    expect(log.lines.join('\n')).not.toContain(FAKE_PT_TOKEN);
  });

  it('5xx while polling is retried', async () => {
    sb.failNext(4, { endpoint: 'analysis/checkTask' });
    const f = await scanText(simpleMail('poll retry', { extraHeaders: ['X-Test-Verdict: UNWANTED'] }));
    expect(f).toMatchObject({ kind: 'suspicious' });
  });

  it('an unreachable appliance: failed(unavailable)', async () => {
    const gone = await startFakePtSandbox();
    const url = gone.url;
    await gone.close();
    const scanner = makeScanner(testConfig(url, { retries: { attempts: 2, backoff: '5ms' } }), state);
    const t0 = Date.now();
    const f = await scanner.scan(
      message(simpleMail('x')),
      directContext({ deadline: Date.now() + 500, signal: new AbortController().signal }),
    );
    await scanner.close();
    // Retried inside the deadline, then given up with the cause, not a timeout.
    expect(f).toMatchObject({ kind: 'failed', reason: 'unavailable' });
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('404 while polling: resubmits once and gets the verdict', async () => {
    const slow = await startFakePtSandbox({ taskDurationMs: 150 });
    try {
      const log = new LogCapture();
      const scanner = makeScanner(testConfig(slow.url), state, { log: log.log });
      const pending = scanner.scan(
        message(simpleMail('lost', { extraHeaders: ['X-Test-Verdict: UNWANTED'] })),
        directContext({ deadline: soon(), log: log.log }),
      );
      while (slow.tasksCreated() === 0 || (slow.counters['analysis/checkTask'] ?? 0) === 0)
        await new Promise((r) => setTimeout(r, 5));
      slow.forgetTasks();
      const f = await pending;
      await scanner.close();
      expect(f).toMatchObject({ kind: 'suspicious' });
      expect(slow.counters['analysis/createScanTask']).toBe(2);
      expect(log.events()).toContain('pt.task_lost');
    } finally {
      await slow.close();
    }
  });

  it('preflight DANGEROUS ends the wait early', async () => {
    const slow = await startFakePtSandbox({ taskDurationMs: 400 });
    try {
      const scanner = makeScanner(testConfig(slow.url, { allowPreflight: true }), state);
      const t0 = Date.now();
      const f = await scanner.scan(message(simpleMail(EICAR)), directContext({ deadline: soon() }));
      await scanner.close();
      expect(f).toMatchObject({ kind: 'malicious', details: { preflight: true } });
      expect(Date.now() - t0).toBeLessThan(400);
    } finally {
      await slow.close();
    }
  });
});
