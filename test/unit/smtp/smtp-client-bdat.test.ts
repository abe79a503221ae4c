import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { SmtpClient } from '../../../src/smtp/smtp-client.js';

/**
 * A next hop that offers CHUNKING (RFC 3030), as Postfix does: it records each BDAT command and
 * the exact bytes of each chunk, and can refuse the nth chunk.
 */
async function startChunkingHop(o: { refuseChunk?: number; offer?: string } = {}) {
  const commands: string[] = [];
  const chunks: Buffer[] = [];
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    let want = 0; // bytes of chunk data still to read
    let last = false;
    const reply = (line: string) => socket.write(`${line}\r\n`);
    socket.on('data', (data: Buffer) => {
      buf = Buffer.concat([buf, data]);
      for (;;) {
        if (want > 0) {
          if (buf.length < want) return;
          chunks.push(buf.subarray(0, want));
          buf = buf.subarray(want);
          want = 0;
          const n = chunks.length;
          reply(
            o.refuseChunk === n
              ? '552 5.3.4 chunk too big for us'
              : last
                ? '250 2.0.0 Ok: queued'
                : `250 2.0.0 ${n} octets received`,
          );
          continue;
        }
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const line = buf.subarray(0, eol).toString();
        buf = buf.subarray(eol + 2);
        commands.push(line);
        const bdat = /^BDAT (\d+)( LAST)?$/i.exec(line);
        if (bdat) {
          want = Number(bdat[1]);
          last = bdat[2] !== undefined;
          if (want === 0) {
            chunks.push(Buffer.alloc(0));
            reply('250 2.0.0 Ok: queued');
          }
        } else if (/^EHLO/i.test(line))
          reply(`250-fake.test\r\n250-PIPELINING\r\n250 ${o.offer ?? 'CHUNKING'}`);
        else if (/^DATA/i.test(line)) reply('354 go ahead');
        else if (/^QUIT/i.test(line)) {
          reply('221 bye');
          socket.end();
        } else reply('250 2.0.0 Ok');
      }
    });
    reply('220 fake.test ESMTP');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    commands,
    chunks,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function client(port: number): Promise<SmtpClient> {
  const c = await SmtpClient.connect({
    host: '127.0.0.1',
    port,
    lmtp: false,
    name: 'sandgate.test',
    timeout: 5000,
    tls: 'none',
  });
  cleanup.push(() => c.close());
  return c;
}

/** A next hop as above and a client with MAIL and RCPT accepted, ready for the message. */
async function transaction(o: Parameters<typeof startChunkingHop>[0] = {}) {
  const hop = await startChunkingHop(o);
  cleanup.push(() => hop.close());
  const c = await client(hop.port);
  await c.command('MAIL FROM:<a@test.local>');
  await c.command('RCPT TO:<b@test.local>');
  return { hop, c };
}

async function* chunksOf(...parts: Array<string | Buffer>): AsyncGenerator<Buffer> {
  for (const p of parts) {
    // As a stream does: each chunk after an await.
    await Promise.resolve();
    yield Buffer.isBuffer(p) ? p : Buffer.from(p, 'latin1');
  }
}

describe('BDAT to a next hop that offers CHUNKING', () => {
  it('sends a small message as one BDAT LAST, byte for byte, with no dot-stuffing and no terminator', async () => {
    const { hop, c } = await transaction();
    const text = 'X-Sandgate-Verdict: clean\r\nSubject: dots\r\n\r\n.leading dot\r\n.\r\nlast line\r\n';
    const [reply] = await c.data(chunksOf(text.slice(0, 30), text.slice(30)), 1, { crlf: true });
    expect(reply).toMatchObject({ code: 250 });
    expect(hop.commands.filter((l) => l.startsWith('BDAT'))).toEqual([`BDAT ${text.length} LAST`]);
    expect(hop.commands).not.toContain('DATA');
    expect(Buffer.concat(hop.chunks).toString('latin1')).toBe(text);
  });

  it('normalises line endings when the caller does not vouch for them (bare LF cannot smuggle)', async () => {
    const { hop, c } = await transaction();
    await c.data(chunksOf('Subject: x\n\nbody\n.\nMAIL FROM:<evil@x>\r', '\nend'), 1);
    expect(Buffer.concat(hop.chunks).toString('latin1')).toBe(
      'Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x>\r\nend',
    );
  });

  it('sends a large message in 1 MB chunks, each acknowledged, the last one LAST', async () => {
    const { hop, c } = await transaction();
    const line = `${'x'.repeat(998)}\r\n`;
    const big = Buffer.from(line.repeat(2600)); // 2.6 MB
    const parts = Array.from({ length: 40 }, (_, i) =>
      big.subarray((i * big.length) / 40, ((i + 1) * big.length) / 40),
    );
    const [reply] = await c.data(chunksOf(...parts), 1, { crlf: true });
    expect(reply).toMatchObject({ code: 250 });
    const bdats = hop.commands.filter((l) => l.startsWith('BDAT'));
    expect(bdats).toHaveLength(3);
    expect(bdats[2]).toMatch(/ LAST$/);
    expect(bdats.slice(0, 2).every((l) => !l.endsWith('LAST'))).toBe(true);
    expect(Buffer.concat(hop.chunks).equals(big)).toBe(true);
  });

  it('stops at a refused chunk and returns its refusal', async () => {
    const { hop, c } = await transaction({ refuseChunk: 1 });
    const big = Buffer.alloc(3 * 1024 * 1024, 'y');
    const [reply] = await c.data(chunksOf(big.subarray(0, 1024 * 1024), big.subarray(1024 * 1024)), 1, {
      crlf: true,
    });
    expect(reply).toMatchObject({ code: 552 });
    expect(hop.commands.filter((l) => l.startsWith('BDAT'))).toHaveLength(1);
  });

  it('uses DATA when the next hop does not offer CHUNKING', async () => {
    const { hop, c } = await transaction({ offer: '8BITMIME' });
    // The fake does not read DATA content; the 354 is enough to show which path was taken.
    void c.data(chunksOf('Subject: x\r\n\r\nbody\r\n'), 1).catch(() => undefined);
    await expect.poll(() => hop.commands).toContain('DATA');
    expect(hop.commands.some((l) => l.startsWith('BDAT'))).toBe(false);
  });
});
