import { describe, expect, it } from 'vitest';
import { ptSandboxSchema } from '../../../../src/config/pt-sandbox.js';
import { BufferMessage } from '../../../../src/mime/spool.js';
import { retryAfterMs } from '../../../../src/sandbox/pt-sandbox/client.js';
import { normaliseMessage } from '../../../../src/sandbox/pt-sandbox/normalise.js';
import { nextPollWait } from '../../../../src/sandbox/pt-sandbox/task-runner.js';

const ENVELOPE = { sender: 'a@example.org', recipients: ['b@example.net'], frontEnd: 'cli' };

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let out = '';
  for await (const c of stream as AsyncIterable<Buffer>) out += c.toString('latin1');
  return out;
}

describe('polling schedule', () => {
  it('defaults: first after 0.5 s, then x1.5 up to 5 s, and up to 15 s for tasks older than a minute', () => {
    const { polling } = ptSandboxSchema.parse({});
    const at: number[] = [];
    let wait = polling.firstDelay;
    let t = wait;
    at.push(t);
    while (t < 20_000) {
      wait = nextPollWait(wait, t, polling);
      t += wait;
      at.push(Math.round(t));
    }
    expect(at.slice(0, 7)).toEqual([500, 1250, 2375, 4063, 6594, 10391, 15391]);
    expect(nextPollWait(5000, 59_000, polling)).toBe(5000);
    // Older than slowAfter: the waits grow on to slowInterval.
    expect(nextPollWait(5000, 61_000, polling)).toBe(7500);
    expect(nextPollWait(11_250, 80_000, polling)).toBe(15_000);
  });
});

describe('Retry-After', () => {
  it('reads delta-seconds and HTTP dates, caps them, ignores garbage', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs('86400')).toBe(300_000);
    expect(retryAfterMs(new Date(Date.UTC(2026, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2026, 0, 1))).toBe(
      10_000,
    );
    expect(retryAfterMs('soon')).toBeUndefined();
    expect(retryAfterMs(undefined)).toBeUndefined();
  });
});

describe('normalised newsletter copy', () => {
  const copy = (to: string, id: string, eol = '\r\n') =>
    [
      'Received: from mta.example.com by mx.example.net',
      'From: News <news@example.com>',
      `To: ${to}`,
      'Subject: =?UTF-8?B?0KHRh9GR0YI=?=',
      '  continued',
      `Message-ID: <${id}@example.com>`,
      'Date: Fri, 4 Dec 2026 10:00:00 +0000',
      'X-Mailer-Recipient: 17',
      'MIME-Version: 1.0',
      'Content-Type: multipart/alternative; boundary="b"',
      '',
      '--b',
      'Content-Type: text/html',
      '',
      '<a href="https://example.com/">x</a>',
      '--b--',
      '',
    ].join(eol);

  it('keeps the body and the shared fields (folded as written), drops per-recipient ones; same key for every recipient and line ending', async () => {
    const a = await normaliseMessage(new BufferMessage('m1', ENVELOPE, Buffer.from(copy('a@x.net', '1'))));
    const b = await normaliseMessage(
      new BufferMessage('m2', ENVELOPE, Buffer.from(copy('b@y.net', '2', '\n'))),
    );
    expect(a.key).toBe(b.key);
    const text = await readAll(a.open());
    expect(text.length).toBe(a.size);
    expect(text).toBe(
      [
        'From: News <news@example.com>',
        'Subject: =?UTF-8?B?0KHRh9GR0YI=?=',
        '  continued',
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="b"',
        '',
        '--b',
        'Content-Type: text/html',
        '',
        '<a href="https://example.com/">x</a>',
        '--b--',
        '',
      ].join('\r\n'),
    );
    expect(a.subject).toBe('=?UTF-8?B?0KHRh9GR0YI=?=  continued');
    // Opened again (a retried upload): the same bytes.
    expect(await readAll(a.open())).toBe(text);
    const other = await normaliseMessage(
      new BufferMessage(
        'm3',
        ENVELOPE,
        Buffer.from(copy('a@x.net', '1').replace('example.com/', 'example.com/other')),
      ),
    );
    expect(other.key).not.toBe(a.key);
  });
});
