import { unzipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { eicarProbe, SIZE_PROBE_OVERHEAD, sizeProbe } from '../../../../src/sandbox/icap/probe.js';
import { EICAR } from '../clamd/helpers.js';

async function bytes(open: () => NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of open()) parts.push(Buffer.from(c as Buffer));
  return Buffer.concat(parts);
}

describe('health probes', () => {
  it('the EICAR probe is the 68-byte test file', async () => {
    const p = eicarProbe();
    expect(p.size).toBe(68);
    expect((await bytes(p.open)).toString('latin1')).toBe(EICAR);
  });

  it.each([SIZE_PROBE_OVERHEAD, 1000, 64 * 1024 + 7, 5 * 1024 * 1024 - 1])(
    'the size probe of %i bytes is a valid zip of exactly that size, EICAR its last member',
    async (size) => {
      const p = sizeProbe(size)!;
      const data = await bytes(p.open);
      expect(data.length).toBe(size);
      expect(p.size).toBe(size);
      const files = unzipSync(new Uint8Array(data));
      expect(Object.keys(files)).toEqual(['padding.bin', 'eicar.com']);
      expect(Buffer.from(files['eicar.com']!).toString('latin1')).toBe(EICAR);
      expect(files['padding.bin']!.length).toBe(size - SIZE_PROBE_OVERHEAD);
      // Opened twice, the same bytes.
      expect((await bytes(p.open)).equals(data)).toBe(true);
    },
  );

  it('no probe below its own overhead', () => {
    expect(sizeProbe(SIZE_PROBE_OVERHEAD - 1)).toBeUndefined();
  });
});
