import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { analyseMessage } from '../../src/core/content-key.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { EICAR, startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { directContext, MemoHarness } from '../support/memo-harness.js';
import {
  LogCapture,
  mailWithAttachment,
  makeScanner,
  message,
  openTestState,
  simpleMail,
  testConfig,
  type TestState,
} from '../support/pt-sandbox.js';

let sb: FakePtSandbox | undefined;
let state: TestState;

beforeEach(() => {
  state = openTestState();
});
afterEach(async () => {
  await sb?.close();
  sb = undefined;
  await state.close();
});

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

describe('tasks are submitted once', () => {
  it('restart-resume: a new scanner on the same state polls the task instead of resubmitting', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 400 });
    const text = simpleMail('resume', { extraHeaders: ['X-Test-Verdict: DANGEROUS'] });
    const stop = new AbortController();
    const first = makeScanner(testConfig(sb.url), state, { owner: 'process-1' });
    const pending = first.scan(
      message(text),
      directContext({ deadline: Date.now() + 10_000, signal: stop.signal }),
    );
    const fake = sb;
    await until(() => fake.tasksCreated() === 1 && (fake.counters['analysis/checkTask'] ?? 0) > 0);
    stop.abort();
    expect(await pending).toMatchObject({ kind: 'failed', reason: 'timeout' });
    await first.close();
    expect(await state.tasks.count()).toBe(1);

    // "Another process": its own connection to the same state database.
    const other = openSqliteState(state.dir);
    try {
      const log = new LogCapture();
      const second = makeScanner(
        testConfig(sb.url),
        { ...state, state: other, tasks: other.ptTasks },
        { owner: 'process-2', log: log.log },
      );
      const f = await second.scan(
        message(text),
        directContext({ deadline: Date.now() + 10_000, log: log.log }),
      );
      await second.close();
      expect(f).toMatchObject({ kind: 'malicious', details: { resumed: true } });
      expect(sb.tasksCreated()).toBe(1);
      expect(sb.counters['storage/uploadScanFile']).toBe(1);
      // The first process gave its lease up when it stopped polling: adopted at once.
      expect(log.events()).toContain('pt.task_adopted');
      expect(await state.tasks.count()).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('the same message retried with a new Received line: no new task (message mode)', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 250 });
    const body = simpleMail('retry', { extraHeaders: ['X-Test-Verdict: UNWANTED'] });
    const scanner = makeScanner(testConfig(sb.url), state);
    const firstTry = await scanner.scan(message(body), directContext({ deadline: Date.now() + 60 }));
    expect(firstTry).toMatchObject({ kind: 'failed', reason: 'timeout' });
    const retried =
      'Received: from mx2.example.org by gw.example.net; Fri, 1 Nov 2024 10:00:00 +0000\n' + body;
    const secondTry = await scanner.scan(message(retried), directContext({ deadline: Date.now() + 10_000 }));
    await scanner.close();
    expect(secondTry).toMatchObject({ kind: 'suspicious' });
    expect(sb.tasksCreated()).toBe(1);
  });

  it('two processes scanning the same content at once: one task', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 100 });
    const other = openSqliteState(state.dir);
    try {
      const a = makeScanner(testConfig(sb.url), state, { owner: 'p1' });
      const b = makeScanner(
        testConfig(sb.url),
        { ...state, state: other, tasks: other.ptTasks },
        { owner: 'p2' },
      );
      const text = simpleMail('twice', { extraHeaders: ['X-Test-Verdict: UNWANTED'] });
      const [fa, fb] = await Promise.all([
        a.scan(message(text), directContext({ deadline: Date.now() + 10_000 })),
        b.scan(message(text), directContext({ deadline: Date.now() + 10_000 })),
      ]);
      await Promise.all([a.close(), b.close()]);
      expect(fa).toMatchObject({ kind: 'suspicious' });
      expect(fb).toMatchObject({ kind: 'suspicious' });
      expect(sb.tasksCreated()).toBe(1);
    } finally {
      await other.close();
    }
  });

  it('the owner dies while another process polls alongside it: the adopter names the previous owner', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 600_000 });
    const fake = sb;
    const cfg = testConfig(sb.url, { taskLease: '300ms' });
    const text = simpleMail('alongside', { extraHeaders: ['X-Test-Verdict: DANGEROUS'] });
    // The owner: a process with its own connection to the state, submitting the task.
    const ownerState = openSqliteState(state.dir);
    const stopOwner = new AbortController();
    const owner = makeScanner(
      cfg,
      { ...state, state: ownerState, tasks: ownerState.ptTasks },
      { owner: 'process-1' },
    );
    const first = owner
      .scan(message(text), directContext({ deadline: Date.now() + 20_000, signal: stopOwner.signal }))
      .catch(() => undefined);
    await until(() => fake.tasksCreated() === 1);
    // Another process gets the content while the owner renews its lease: it polls alongside.
    const log = new LogCapture();
    const poller = makeScanner(cfg, state, { owner: 'process-2', log: log.log });
    const second = poller.scan(message(text), directContext({ deadline: Date.now() + 20_000, log: log.log }));
    await until(() => log.events().includes('pt.task_resumed'));
    // The owner "dies": it can no longer renew its lease (and does not give it up either).
    await ownerState.close();
    await until(() => log.events().includes('pt.task_adopted'));
    fake.finishAll();
    expect(await second).toMatchObject({ kind: 'malicious' });
    expect(log.records.find((r) => r.event === 'pt.task_adopted')).toMatchObject({
      previousOwner: 'process-1',
    });
    expect(fake.tasksCreated()).toBe(1);
    stopOwner.abort();
    await first;
    await owner.close().catch(() => undefined);
    await poller.close();
  });

  it('deadline: failed(timeout) at once, the verdict arrives in the background, the retry is a cache hit', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 300 });
    const harness = new MemoHarness();
    const scanner = makeScanner(testConfig(sb.url, { maxTaskAge: '30s' }), state);
    const msg = message(simpleMail('bg', { extraHeaders: ['X-Test-Verdict: DANGEROUS'] }));
    const { contentKey } = await analyseMessage(msg);
    const t0 = Date.now();
    const first = await harness.scan(scanner, msg, contentKey, Date.now() + 80);
    expect(first.finding).toMatchObject({ kind: 'failed', reason: 'timeout' });
    expect(Date.now() - t0).toBeLessThan(250);
    await harness.settle();
    const retry = await harness.scan(scanner, msg, contentKey, Date.now() + 80);
    await scanner.close();
    expect(retry).toMatchObject({ source: 'cache', finding: { kind: 'malicious' } });
    expect(sb.tasksCreated()).toBe(1);
  });

  it('in-flight window: at most inflight.max tasks at once, the rest wait in order', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 60 });
    const scanner = makeScanner(testConfig(sb.url, { inflight: { max: 2, start: 2, min: 1 } }), state);
    const msgs = Array.from({ length: 6 }, (_, i) => message(simpleMail(`cap ${i}`)));
    let maxWaiting = 0;
    let maxActive = 0;
    const sampler = setInterval(() => {
      maxActive = Math.max(maxActive, scanner.inflight.active);
      maxWaiting = Math.max(maxWaiting, scanner.inflight.waiting);
    }, 2);
    const findings = await Promise.all(
      msgs.map((m) => scanner.scan(m, directContext({ deadline: Date.now() + 10_000 }))),
    );
    clearInterval(sampler);
    await scanner.close();
    expect(findings.every((f) => f.kind === 'clean')).toBe(true);
    expect(maxActive).toBe(2);
    const tasks = [...sb.tasks.values()].sort((x, y) => x.createdAt - y.createdAt);
    expect(tasks).toHaveLength(6);
    for (const t of tasks) {
      const overlapping = tasks.filter((o) => o.createdAt <= t.createdAt && o.readyAt > t.createdAt);
      expect(overlapping.length).toBeLessThanOrEqual(2);
    }
    // The first two start at once; the four that waited were let in one at a time, in order.
    const names = tasks.map((t) => t.fileName);
    const expected = msgs.map((m) => `${m.msgId}.eml`);
    expect(new Set(names.slice(0, 2))).toEqual(new Set(expected.slice(0, 2)));
    expect(names.slice(2)).toEqual(expected.slice(2));
    expect(maxWaiting).toBe(4);
  });
});

describe('attachments mode and the prefilter', () => {
  it('200 messages with different headers sharing one attachment: 1 task', async () => {
    sb = await startFakePtSandbox({ taskDurationMs: 50 });
    const harness = new MemoHarness();
    const scanner = makeScanner(testConfig(sb.url, { granularity: 'attachments' }), state);
    const attachment = Buffer.concat([
      Buffer.from('%PDF-1.4\n'),
      Buffer.from('PT-FAKE-UNWANTED'),
      Buffer.alloc(4000, 0x41),
    ]);
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const msg = message(
          mailWithAttachment({
            headers: [`X-Campaign-Id: ${i}`, `Received: from relay${i}.example.org by gw.example.net`],
            body: `Dear customer #${i}, see the invoice.`,
            filename: 'invoice.pdf',
            contentType: 'application/pdf',
            content: attachment,
          }),
        );
        const { contentKey } = await analyseMessage(msg);
        return harness.scan(scanner, msg, contentKey, Date.now() + 20_000);
      }),
    );
    await harness.settle();
    await scanner.close();
    expect(results.every((r) => r.finding.kind === 'suspicious')).toBe(true);
    expect(new Set(results.map((r) => r.finding.kind))).toEqual(new Set(['suspicious']));
    expect(sb.tasksCreated()).toBe(1);
    expect(sb.uploads.filter((u) => u.refused === undefined)).toHaveLength(1);
    expect(sb.uploads[0]?.size).toBe(attachment.length);
  });

  it('the message verdict is the worst part', async () => {
    sb = await startFakePtSandbox();
    const scanner = makeScanner(testConfig(sb.url, { granularity: 'attachments' }), state);
    const text = mailWithAttachment({ filename: 'eicar.com', content: EICAR }).replace(
      '--BOUNDARY--',
      [
        '--BOUNDARY',
        'Content-Type: text/csv; name="a.csv"',
        'Content-Disposition: attachment; filename="a.csv"',
        '',
        'a,b,c',
        '--BOUNDARY--',
      ].join('\n'),
    );
    const f = await scanner.scan(message(text), directContext({ deadline: Date.now() + 10_000 }));
    await scanner.close();
    expect(f).toMatchObject({ kind: 'malicious', threats: ['EICAR-Test-File'] });
    expect(sb.tasksCreated()).toBe(2);
  });

  it('prefilter: no risky parts and no links -> skipped(prefilter), nothing uploaded', async () => {
    sb = await startFakePtSandbox();
    const cfg = testConfig(sb.url, { prefilter: { enabled: true } });
    const scanner = makeScanner(cfg, state);
    const plain = await scanner.scan(
      message(simpleMail('just text, no links')),
      directContext({ deadline: Date.now() + 5000 }),
    );
    const image = await scanner.scan(
      message(
        mailWithAttachment({
          filename: 'photo.jpg',
          contentType: 'image/jpeg',
          content: Buffer.alloc(500, 1),
        }),
      ),
      directContext({ deadline: Date.now() + 5000 }),
    );
    expect(plain).toEqual({ kind: 'skipped', reason: 'prefilter' });
    expect(image).toEqual({ kind: 'skipped', reason: 'prefilter' });
    expect(sb.counters['storage/uploadScanFile'] ?? 0).toBe(0);

    const link = await scanner.scan(
      message(simpleMail('click https://phish.example.com/login now')),
      directContext({ deadline: Date.now() + 5000 }),
    );
    const doc = await scanner.scan(
      message(mailWithAttachment({ filename: 'report.docm', content: Buffer.from('PK\u0003\u0004 macro') })),
      directContext({ deadline: Date.now() + 5000 }),
    );
    await scanner.close();
    expect(link).toMatchObject({ kind: 'clean' });
    expect(doc).toMatchObject({ kind: 'clean' });
    expect(sb.counters['storage/uploadScanFile']).toBe(2);
  });

  it('attachments mode: bodies with links also go as a message', async () => {
    sb = await startFakePtSandbox();
    const scanner = makeScanner(testConfig(sb.url, { granularity: 'attachments' }), state);
    const f = await scanner.scan(
      message(
        mailWithAttachment({
          body: 'http://evil.example.com/x X-Test-Verdict: UNWANTED',
          filename: 'a.bin',
          content: 'zzz',
        }),
      ),
      directContext({ deadline: Date.now() + 5000 }),
    );
    await scanner.close();
    expect(f).toMatchObject({ kind: 'suspicious' });
    expect(sb.tasksCreated()).toBe(2);
  });
});
