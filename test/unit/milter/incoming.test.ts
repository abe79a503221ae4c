import { describe, expect, it } from 'vitest';
import { analyseMessage } from '../../../src/core/content-key.js';
import { readHeaderFields } from '../../../src/core/header-block.js';
import type { Spool } from '../../../src/mime/spool.js';
import { IncomingMessage } from '../../../src/milter/incoming.js';
import { tempDir } from '../../support/tmp.js';

async function rebuild(events: (m: IncomingMessage) => void, memoryThreshold = 1 << 20): Promise<Spool> {
  const m = new IncomingMessage({
    msgId: 'm1',
    envelope: { sender: 'a@example.test', recipients: ['b@example.test'], frontEnd: 'milter' },
    dir: tempDir('sg-milter-incoming-'),
    memoryThreshold,
    maxBytes: 1 << 20,
    leadingSpace: true,
  });
  events(m);
  return m.finish();
}

async function bytesOf(spool: Spool): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of spool.open()) out.push(c as Buffer);
  return Buffer.concat(out);
}

describe('IncomingMessage', () => {
  for (const memoryThreshold of [1 << 20, 0]) {
    it(`hands the core the header block it rebuilt, as a reader of the spool finds it (${memoryThreshold === 0 ? 'file' : 'memory'} spool)`, async () => {
      const spool = await rebuild((m) => {
        m.header(Buffer.from('Received'), Buffer.from(' from a\n\tby b'));
        m.header(Buffer.from('Subject'), Buffer.from(' hello'));
        m.header(Buffer.from('X-Sandgate-Verdict'), Buffer.from(' forged'));
        m.endOfHeaders();
        m.body(Buffer.from('line one\r\n\r\nline two\r\n'));
      }, memoryThreshold);
      try {
        const bytes = await bytesOf(spool);
        expect(bytes.toString('latin1')).toBe(
          'Received: from a\r\n\tby b\r\nSubject: hello\r\nX-Sandgate-Verdict: forged\r\n\r\nline one\r\n\r\nline two\r\n',
        );
        const parsed = spool.header;
        expect(parsed).toBeDefined();
        const fromBytes = await readHeaderFields(spool.open());
        expect(parsed?.fields.map((f) => [f.name, f.raw.toString('latin1')])).toEqual(
          fromBytes.map((f) => [f.name, f.raw.toString('latin1')]),
        );
        expect(parsed?.bodyStart).toBe(bytes.indexOf('\r\n\r\n') + 2);
        // The content key with the parsed header equals the one read from the bytes alone.
        const withHeader = await analyseMessage(spool);
        spool.header = undefined;
        const fromScratch = await analyseMessage(spool);
        expect(withHeader).toEqual(fromScratch);
      } finally {
        spool.dispose();
      }
    });
  }

  it('puts the blank line back for a message without a body, and the header block ends there', async () => {
    const spool = await rebuild((m) => {
      m.header(Buffer.from('Subject'), Buffer.from(' no body'));
    });
    try {
      expect((await bytesOf(spool)).toString('latin1')).toBe('Subject: no body\r\n\r\n');
      expect(spool.header?.bodyStart).toBe('Subject: no body\r\n'.length);
      expect(spool.header?.fields.map((f) => f.name)).toEqual(['subject']);
    } finally {
      spool.dispose();
    }
  });
});
