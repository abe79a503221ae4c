import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  HeaderWatcher,
  MAX_HEADER_BLOCK,
  mapHeaderBlock,
  type ParsedHeader,
} from '../../../src/core/header-block.js';

/** What mapHeaderBlock makes of the same bytes afterwards: the reference the watcher must match. */
async function reference(bytes: Buffer): Promise<ParsedHeader> {
  let seen: { fields: string[]; block: number } | undefined;
  for await (const _ of mapHeaderBlock(Readable.from([bytes]), (fields, block) => {
    seen = { fields: fields.map((f) => f.raw.toString('latin1')), block: block.length };
    return Buffer.alloc(0);
  }));
  const s = seen ?? { fields: [], block: 0 };
  // The body (the blank line first) starts where the block ends; an all-header message's at its end.
  return {
    fields: s.fields.map((raw) => ({ name: '', raw: Buffer.from(raw, 'latin1') })),
    bodyStart: s.block,
  };
}

function watch(bytes: Buffer, chunk: number): ParsedHeader {
  const w = new HeaderWatcher();
  for (let i = 0; i < bytes.length; i += chunk) w.push(bytes.subarray(i, i + chunk));
  return w.end(bytes.length);
}

const raws = (h: ParsedHeader) => h.fields.map((f) => f.raw.toString('latin1'));

describe('HeaderWatcher', () => {
  const cases: Record<string, string> = {
    'ordinary header and body':
      'Received: from a\r\n\tby b\r\nSubject: s\r\nFrom: x@y\r\n\r\nbody\r\n\r\nmore\r\n',
    'LF line endings': 'Subject: s\nX-A: 1\n  folded\n\nbody\n',
    'no blank line: all header': 'Subject: s\r\nFrom: x@y\r\n',
    'blank line first: all body': '\r\nSubject: not a field\r\n',
    'a line without a colon': 'Subject: s\r\nnot a field\r\n\r\nbody\r\n',
  };
  for (const [name, text] of Object.entries(cases)) {
    it(`reads "${name}" as mapHeaderBlock does, however the bytes are chunked`, async () => {
      const bytes = Buffer.from(text, 'latin1');
      const want = await reference(bytes);
      for (const chunk of [1, 2, 3, 7, bytes.length]) {
        const got = watch(bytes, chunk);
        expect(raws(got), `chunk ${chunk}`).toEqual(raws(want));
        expect(got.bodyStart, `chunk ${chunk}`).toBe(want.bodyStart);
      }
    });
  }

  it('counts the Received fields of the header block (the loop guard)', () => {
    const w = new HeaderWatcher();
    w.push(Buffer.from('Received: a\r\nreceived: b\r\nSubject: s\r\n\r\nReceived: in the body\r\n'));
    w.end(0);
    expect(w.hops).toBe(2);
  });

  it('takes a message without a blank line in the first MiB as all body, and still counts its Received fields', () => {
    const w = new HeaderWatcher();
    w.push(Buffer.from('Received: a\r\nReceived: b\r\n'));
    w.push(Buffer.alloc(MAX_HEADER_BLOCK, 'x'));
    const h = w.end(MAX_HEADER_BLOCK + 26);
    expect(h).toEqual({ fields: [], bodyStart: 0 });
    expect(w.hops).toBe(2);
  });
});
