import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { decode } from 'libqp';
import { describe, expect, it } from 'vitest';
import { QpDecoder } from '../../../src/mime/qp-decoder.js';
import { qpEncode } from '../../support/specimens.js';

async function decodeInPieces(input: Buffer, size: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += size) pieces.push(input.subarray(i, i + size));
  return buffer(Readable.from(pieces).pipe(new QpDecoder()));
}

describe('QpDecoder', () => {
  const original = Buffer.from(Array.from({ length: 700 }, (_, i) => (i * 7) & 0xff));
  const encoded = Buffer.from(qpEncode(original), 'latin1');

  it('decodes the same whatever the chunking (escapes and soft breaks split anywhere)', async () => {
    for (const size of [1, 2, 3, 5, 76, 77, 1000]) {
      expect((await decodeInPieces(encoded, size)).equals(original)).toBe(true);
    }
  });

  it('matches libqp decode() on a line longer than its carry limit without line breaks', async () => {
    const long = Buffer.from('=41'.repeat(40_000) + 'tail', 'latin1');
    const out = await decodeInPieces(long, 10_000);
    expect(out.equals(decode(long))).toBe(true);
  });
});
