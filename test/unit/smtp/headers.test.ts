import { describe, expect, it } from 'vitest';
import { countFields, MAX_HEADER_BLOCK, splitHeaderFields } from '../../../src/core/header-block.js';
import { formatField, rewriteHeaders } from '../../../src/smtp/headers.js';

async function run(
  chunks: string[],
  prepend: Array<{ name: string; value: string }>,
  strip: string[],
): Promise<string> {
  let out = '';
  const src = (async function* () {
    await Promise.resolve();
    for (const c of chunks) yield Buffer.from(c, 'latin1');
  })();
  for await (const c of rewriteHeaders(src, { prepend, strip })) out += c.toString('latin1');
  return out;
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
