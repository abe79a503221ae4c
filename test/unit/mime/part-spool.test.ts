import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PartSpool } from '../../../src/mime/part-spool.js';
import { pump } from '../../../src/mime/pump.js';
import { Spool } from '../../../src/mime/spool.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sg-part-spool-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const bytes = Buffer.from('0123456789abcdef'.repeat(1000));
const chunks = [bytes.subarray(0, 5000), bytes.subarray(5000, 11000), bytes.subarray(11000)];

async function read(spool: PartSpool): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of spool.open()) out.push(c as Buffer);
  return Buffer.concat(out);
}

describe('PartSpool written directly', () => {
  it.each([
    ['in memory', 1024 * 1024],
    ['in a file', 4096],
  ])('keeps the bytes and their SHA-256 %s', async (_where, threshold) => {
    const spool = new PartSpool(dir, threshold);
    for (const c of chunks) await spool.write(c);
    await spool.end();
    expect(spool.path === undefined).toBe(threshold > bytes.length);
    expect(spool.size).toBe(bytes.length);
    expect(spool.sha256).toBe(sha(bytes));
    expect(spool.head).toEqual(bytes.subarray(0, 4096));
    expect(await read(spool)).toEqual(bytes);
    spool.dispose();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('gives the same SHA-256 through the stream sink', async () => {
    const spool = new PartSpool(dir, 1024 * 1024);
    await pump([Readable.from(chunks), spool.writable()]);
    expect(spool.sha256).toBe(sha(bytes));
    spool.dispose();
  });

  it('reports no hash before the end and refuses to hash after dispose()', async () => {
    const spool = new PartSpool(dir, 1024 * 1024);
    await spool.write(bytes);
    expect(spool.sha256).toBe('');
    await spool.end();
    spool.dispose();
    expect(() => spool.sha256).toThrow(/after dispose/);
  });

  it('throws what the guard throws', () => {
    const spool = new PartSpool(dir, 1024 * 1024, () => {
      throw new Error('limit');
    });
    expect(() => spool.write(bytes)).toThrow('limit');
    spool.dispose();
  });
});

describe('pump', () => {
  it('rejects when a source closes before its end without an error', async () => {
    const source = new PassThrough();
    const sink = new Writable({ write: (_c, _e, done) => done() });
    const piped = pump([source, sink]);
    source.write('partial');
    source.destroy();
    await expect(piped).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('lets Spool.fromStream fail instead of waiting for ever on such a source', async () => {
    const source = new PassThrough();
    const spooling = Spool.fromStream(source, {
      msgId: 'premature',
      envelope: { sender: '', recipients: [], frontEnd: 'test' },
      dir,
      memoryThreshold: 1024,
    });
    source.write('partial');
    source.destroy();
    await expect(spooling).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });
});
