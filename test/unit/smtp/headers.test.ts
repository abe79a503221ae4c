import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  countFields,
  headerBlockEnd,
  MAX_HEADER_BLOCK,
  splitHeaderFields,
  type ParsedHeader,
} from '../../../src/core/header-block.js';
import type { MessageSource } from '../../../src/core/message.js';
import { formatField, rewriteHeaders } from '../../../src/smtp/headers.js';

/** The header block as the relay's receive parses it (src/smtp/receive.ts). */
function parsedLikeReceive(bytes: Buffer): ParsedHeader {
  const end = headerBlockEnd(bytes);
  if (end >= 0 && end <= MAX_HEADER_BLOCK)
    return { fields: splitHeaderFields(bytes.subarray(0, end)), bodyStart: end };
  if (bytes.length >= MAX_HEADER_BLOCK) return { fields: [], bodyStart: 0 };
  return { fields: splitHeaderFields(bytes), bodyStart: bytes.length };
}

/** Rewrites a message given in chunks, both ways: parsing the header block here, and with it parsed on receipt. */
async function run(
  chunks: string[],
  prepend: Array<{ name: string; value: string }>,
  strip: string[],
): Promise<string> {
  const bytes = Buffer.from(chunks.join(''), 'latin1');
  const source = (header?: ParsedHeader): MessageSource => ({
    msgId: 'm',
    envelope: { sender: '', recipients: [], frontEnd: 'test' },
    size: bytes.length,
    open: (range = {}) => Readable.from([bytes.subarray(range.start ?? 0, range.end ?? bytes.length)]),
    iterate: async function* () {
      await Promise.resolve();
      for (const c of chunks) yield Buffer.from(c, 'latin1');
    },
    ...(header !== undefined ? { header } : {}),
  });
  const collect = async (m: MessageSource) => {
    let out = '';
    for await (const c of rewriteHeaders(m, { prepend, strip })) out += c.toString('latin1');
    return out;
  };
  const parsedHere = await collect(source());
  const parsedOnReceipt = await collect(source(parsedLikeReceive(bytes)));
  expect(parsedOnReceipt).toBe(parsedHere);
  return parsedHere;
}

describe('header handling', () => {
  it('splits folded fields and counts by name', () => {
    const fields = splitHeaderFields(Buffer.from('Received: a\r\n\tb\r\nreceived: c\r\nSubject: x\r\n'));
    expect(fields.map((f) => f.raw.toString())).toEqual([
      'Received: a\r\n\tb\r\n',
      'received: c\r\n',
      'Subject: x\r\n',
    ]);
    expect(countFields(fields, 'Received')).toBe(2);
  });

  it('prepends ours and strips inbound copies (folded, any case), byte for byte otherwise', async () => {
    const msg =
      'x-sandgate-verdict: forged\r\n continued\r\nSubject: s\r\nX-Other: \xe9\r\n\r\nbody\r\nX-Sandgate-Verdict: in body stays\r\n';
    const out = await run(
      [msg.slice(0, 10), msg.slice(10)],
      [{ name: 'X-Sandgate-Verdict', value: 'clean' }],
      ['X-Sandgate-Verdict'],
    );
    expect(out).toBe(
      'X-Sandgate-Verdict: clean\r\nSubject: s\r\nX-Other: \xe9\r\n\r\nbody\r\nX-Sandgate-Verdict: in body stays\r\n',
    );
  });

  it('treats a message without a blank line as all header, and one starting with a blank line as no header', async () => {
    expect(await run(['X-Sandgate-Mark: m\r\nSubject: s\r\n'], [], ['x-sandgate-mark'])).toBe(
      'Subject: s\r\n',
    );
    expect(await run(['\r\nbody\r\n'], [{ name: 'A', value: 'b' }], ['x'])).toBe('A: b\r\n\r\nbody\r\n');
  });

  it('cannot be made to inject a field through a value', () => {
    expect(formatField({ name: 'X-A', value: 'v\r\nBcc: evil@x' })).toBe('X-A: v Bcc: evil@x\r\n');
  });

  it('passes a giant header through after the limit without buffering the message', async () => {
    const big = `Subject: s\r\n${'X-Pad: y\r\n'.repeat(MAX_HEADER_BLOCK / 10 + 10)}\r\nbody\r\n`;
    const out = await run([big], [], ['x-none']);
    expect(out).toBe(big);
  });
});
