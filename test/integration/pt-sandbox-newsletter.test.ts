/**
 * Attachments granularity: a message whose bodies carry links goes to the sandbox as a normalised
 * copy without its per-recipient header fields, so one newsletter to many recipients is one task.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/cli/runtime.js';
import { startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { makeScanner, openTestState, testConfig, type TestState } from '../support/pt-sandbox.js';
import { message, startRuntime } from '../support/runtime.js';

let sb: FakePtSandbox;
let state: TestState;
let rt: Runtime | undefined;

beforeEach(async () => {
  sb = await startFakePtSandbox({ taskDurationMs: 30 });
  state = openTestState();
});
afterEach(async () => {
  await rt?.close();
  rt = undefined;
  await state.close();
  await sb.close();
});

/** The newsletter as recipient `i` gets it: the same body, their own header fields. */
function newsletter(i: number, body = 'Our spring offers: https://shop.example.com/spring?utm=mail'): string {
  return [
    `Received: from mta${i % 7}.example.com by mx.example.net; Fri, 4 Dec 2026 10:${String(i % 60).padStart(2, '0')}:00 +0000`,
    `DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=${Buffer.from(`sig${i}`).toString('base64')}`,
    'From: "Example Shop" <news@example.com>',
    `To: customer${i}@example.net`,
    i % 3 === 0 ? `Cc: other${i}@example.net` : `X-Recipient-Id: ${i}`,
    'Reply-To: help@example.com',
    'Subject: Spring offers',
    `Date: Fri, 4 Dec 2026 10:00:${String(i % 60).padStart(2, '0')} +0000`,
    `Message-ID: <news-${i}@example.com>`,
    `List-Unsubscribe: <https://shop.example.com/unsubscribe?u=${i}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    body,
    '',
  ].join('\r\n');
}

describe('attachments granularity: newsletters', () => {
  it('300 copies of one newsletter to different recipients make one task', async () => {
    const scanner = makeScanner(testConfig(sb.url, { granularity: 'attachments' }), state);
    rt = await startRuntime(state.dir, [scanner], { config: { scan: { chain: ['pt-sandbox'] } } });
    const evaluator = rt.evaluator;
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        evaluator.evaluate(message(newsletter(i)), { deadline: Date.now() + 20_000 }),
      ),
    );
    expect(new Set(results.map((r) => r.contentKey)).size).toBe(300);
    expect(results.filter((r) => r.decision.action !== 'deliver')).toEqual([]);
    expect(sb.tasksCreated()).toBe(1);
    expect(sb.uploads.filter((u) => u.refused === undefined)).toHaveLength(1);

    // What the sandbox got: the body and the fields every copy shares, none of the per-recipient ones.
    const sent = [...sb.tasks.values()][0]!.bytes.toString('latin1');
    expect(sent).toContain('https://shop.example.com/spring');
    expect(sent).toMatch(/^From: "Example Shop" <news@example\.com>\r\n/m);
    expect(sent).toMatch(/^Subject: Spring offers\r\n/m);
    expect(sent).toMatch(/^Content-Type: text\/plain/m);
    for (const field of [
      'To',
      'Cc',
      'Date',
      'Message-ID',
      'Received',
      'DKIM-Signature',
      'List-Unsubscribe',
    ]) {
      expect(sent).not.toMatch(new RegExp(`^${field}:`, 'mi'));
    }
    expect(sent).not.toContain('customer');

    // A different body is other content: a second task.
    await evaluator.evaluate(message(newsletter(1, 'Winter offers: https://shop.example.com/winter')), {
      deadline: Date.now() + 20_000,
    });
    expect(sb.tasksCreated()).toBe(2);
  });

  it('the verdict on the normalised copy applies to every copy (a dangerous newsletter is blocked for all)', async () => {
    const scanner = makeScanner(testConfig(sb.url, { granularity: 'attachments' }), state);
    rt = await startRuntime(state.dir, [scanner], { config: { scan: { chain: ['pt-sandbox'] } } });
    const body = 'Click https://phish.example.org/login X-Test-Verdict: DANGEROUS';
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        rt!.evaluator.evaluate(message(newsletter(i, body)), { deadline: Date.now() + 20_000 }),
      ),
    );
    expect(results.map((r) => r.decision.verdict)).toEqual(Array(20).fill('malicious'));
    expect(sb.tasksCreated()).toBe(1);
  });
});
