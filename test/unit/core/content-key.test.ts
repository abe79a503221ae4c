import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { analyseMessage } from '../../../src/core/content-key.js';
import { message } from '../../support/runtime.js';

const BODY = 'From: a@example.test\r\nTo: b@example.test\r\nSubject: s\r\n\r\nbody line\r\n.dot line\r\n';
const key = async (text: string) => (await analyseMessage(message(text))).contentKey;

describe('content key', () => {
  it('ignores leading trace fields and our own fields wherever they are', async () => {
    const base = await key(BODY);
    expect(
      await key(
        `Received: from a by b\r\n\tid 1; Fri, 27 Nov 2026 10:00:00 +0000\r\nReturn-Path: <a@example.test>\r\n${BODY}`,
      ),
    ).toBe(base);
    expect(await key(`X-Sandgate-Mark: v=1\r\nReceived: from a\r\n${BODY}`)).toBe(base);
    expect(await key(`Received: from a\r\nX-Sandgate-Verdict: clean\r\nReceived: from b\r\n${BODY}`)).toBe(
      base,
    );
    expect(await key(BODY.replace('Subject: s\r\n', 'Subject: s\r\nX-Sandgate-Verdict: forged\r\n'))).toBe(
      base,
    );
  });

  it('counts trace fields that are not leading, and every other field', async () => {
    const base = await key(BODY);
    expect(await key(BODY.replace('Subject: s\r\n', 'Subject: s\r\nReceived: from inside\r\n'))).not.toBe(
      base,
    );
    expect(await key(BODY.replace('Subject: s', 'Subject: t'))).not.toBe(base);
    expect(await key(BODY.replace('body line', 'body lime'))).not.toBe(base);
  });

  it('treats CRLF and LF alike, also when a CR ends one chunk', async () => {
    const base = await key(BODY);
    expect(await key(BODY.replace(/\r\n/g, '\n'))).toBe(base);
    const bytes = Buffer.from(BODY);
    const split = bytes.indexOf('\r\n.dot') + 1; // CR at the end of one chunk, LF at the start of the next
    const chunked = {
      ...message(BODY),
      open: () => Readable.from([bytes.subarray(0, split), bytes.subarray(split)]),
    };
    expect((await analyseMessage(chunked as never)).contentKey).toBe(base);
  });

  it('hashes exactly the message with CRLF turned into LF, however it is cut into chunks', async () => {
    // An independent statement of the definition: SHA-256 of the whole text with CRLF -> LF (bare
    // CRs stay), for a message without trace fields or our own fields.
    const { createHash } = await import('node:crypto');
    const oracle = (text: string) =>
      createHash('sha256')
        .update(Buffer.from(text.replaceAll('\r\n', '\n'), 'latin1'))
        .digest('hex');
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return Math.floor((seed / 2147483648) * n);
    };
    const pieces = ['a', 'bc', '\r\n', '\r', '\n', '\r\r\n', 'x\r\ny', '\u00e9'];
    for (let i = 0; i < 300; i++) {
      const body = Array.from({ length: 1 + rnd(40) }, () => pieces[rnd(pieces.length)]).join('');
      const text = `Subject: t${i}\r\n\r\n${body}`;
      const bytes = Buffer.from(text, 'latin1');
      const cuts = [
        0,
        ...Array.from({ length: rnd(4) }, () => rnd(bytes.length + 1)).sort((a, b) => a - b),
        bytes.length,
      ];
      const chunks = cuts.slice(1).map((end, k) => bytes.subarray(cuts[k], end));
      const cut = { ...message(text), open: () => Readable.from(chunks) };
      expect((await analyseMessage(cut as never)).contentKey).toBe(oracle(text));
    }
  });

  it('parses folded header fields', async () => {
    const { headers } = await analyseMessage(
      message('Subject: a\r\n b\r\nX-Sandgate-Mark: v=1;\r\n\tk=clean\r\n\r\nx'),
    );
    expect(headers).toEqual([
      { name: 'subject', value: 'a b' },
      { name: 'x-sandgate-mark', value: 'v=1; k=clean' },
    ]);
  });
});
