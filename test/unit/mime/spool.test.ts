import { existsSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { isSandgateError } from '../../../src/core/errors.js';
import { readChunks } from '../../../src/core/message.js';
import { BufferMessage, Spool } from '../../../src/mime/spool.js';
import { ownerOf, ownerTag } from '../../../src/mime/spool-owner.js';
import { ENVELOPE } from '../../support/runtime.js';
import { tempDir } from '../../support/tmp.js';

const opts = (dir: string, extra: Partial<Parameters<typeof Spool.fromStream>[1]> = {}) => ({
  msgId: 'sg-test-0000000001',
  envelope: ENVELOPE,
  dir,
  memoryThreshold: 16,
  ...extra,
});

describe('Spool', () => {
  it('keeps small messages in memory and large ones in a file; every reader gets the same bytes', async () => {
    const dir = tempDir();
    const small = await Spool.fromStream(Readable.from([Buffer.from('tiny')]), opts(dir));
    expect(small.path).toBeUndefined();
    expect(await text(small.open())).toBe('tiny');
    const big = await Spool.fromStream(
      Readable.from(['a'.repeat(10), 'b'.repeat(10), 'c'.repeat(10)]),
      opts(dir),
    );
    // The owner (this process's pid and start time) is part of the name: see spool-owner.ts.
    expect(big.path).toBe(join(dir, `sg-test-0000000001.${ownerTag()}.eml`));
    expect(ownerOf(basename(big.path!))).toMatchObject({ pid: process.pid });
    expect(await text(big.open())).toBe('a'.repeat(10) + 'b'.repeat(10) + 'c'.repeat(10));
    expect(await text(big.open({ start: 8, end: 12 }))).toBe('aabb');
    expect(big.size).toBe(30);
    big.dispose();
    small.dispose();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('iterate() yields the bytes of open(): in memory without a stream, from the file otherwise', async () => {
    const dir = tempDir();
    const small = await Spool.fromStream(Readable.from([Buffer.from('ti'), Buffer.from('ny')]), opts(dir));
    const memory = small.iterate();
    expect(memory).not.toBeInstanceOf(Readable);
    expect(await text(memory)).toBe('tiny');
    // A reader can iterate again; each gets every byte.
    expect(await text(readChunks(small))).toBe('tiny');
    const big = await Spool.fromStream(Readable.from(['a'.repeat(10), 'b'.repeat(10)]), opts(dir));
    const file = big.iterate();
    expect(file).toBeInstanceOf(Readable);
    expect(await text(file)).toBe('a'.repeat(10) + 'b'.repeat(10));
    // A reader that started before dispose() finishes with the bytes it was given.
    const started = small.iterate()[Symbol.asyncIterator]();
    small.dispose();
    const first = await started.next();
    expect(first.done).toBe(false);
    expect(String(first.value)).toBe('ti');
    expect(() => small.iterate()).toThrow(/after dispose/);
    big.dispose();
    expect(() => big.iterate()).toThrow(/after dispose/);
  });

  it('readChunks() falls back to open() for a source without iterate()', async () => {
    const source = new BufferMessage('sg-test-0000000002', ENVELOPE, Buffer.from('plain bytes'));
    const chunks = readChunks(source);
    expect(chunks).toBeInstanceOf(Readable);
    expect(await text(chunks)).toBe('plain bytes');
  });

  it('reads past maxBytes to the end but keeps only maxBytes', async () => {
    const spool = await Spool.fromStream(
      Readable.from(['x'.repeat(50), 'y'.repeat(50)]),
      opts(tempDir(), { maxBytes: 60 }),
    );
    expect(spool.size).toBe(60);
    expect(spool.receivedBytes).toBe(100);
    expect(spool.sizeExceeded).toBe(true);
    spool.dispose();
  });

  it("with overflow 'fail' stops reading at maxBytes, leaves no file and rejects with ERR_MESSAGE_TOO_LARGE", async () => {
    const dir = tempDir();
    let produced = 0;
    // An input that does not end for a long time (`cat /dev/zero | sandgate scan -`).
    const endless = new Readable({
      read() {
        produced += 1024;
        this.push(produced > 20 * 1024 * 1024 ? null : Buffer.alloc(1024));
      },
    });
    const err = await Spool.fromStream(endless, opts(dir, { maxBytes: 100_000, overflow: 'fail' })).catch(
      (e: unknown) => e,
    );
    expect(isSandgateError(err, 'ERR_MESSAGE_TOO_LARGE')).toBe(true);
    expect(endless.destroyed).toBe(true);
    // Read ahead is bounded by the stream buffers, not by the input.
    expect(produced).toBeLessThan(100_000 + 512 * 1024);
    expect(readdirSync(dir)).toEqual([]);
    // Exactly maxBytes is not too large.
    const exact = await Spool.fromStream(
      Readable.from([Buffer.alloc(60), Buffer.alloc(40)]),
      opts(dir, { maxBytes: 100, overflow: 'fail' }),
    );
    expect(exact.size).toBe(100);
    exact.dispose();
  });

  it('leaves no file behind when the sender goes away mid-message', async () => {
    const dir = tempDir();
    const input = new PassThrough();
    const pending = Spool.fromStream(input, opts(dir));
    input.write('z'.repeat(1000)); // past the threshold: the file is being opened
    input.destroy(new Error('client went away'));
    await expect(pending).rejects.toThrow('client went away');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a write failure is ERR_SPOOL_WRITE after the input was read to its end', async () => {
    const dir = join(tempDir(), 'not-a-dir');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(dir, 'a file where the spool directory should be');
    let consumed = false;
    const input = Readable.from(
      (function* () {
        yield 'q'.repeat(100);
        yield 'r'.repeat(100);
        consumed = true;
      })(),
    );
    const err = await Spool.fromStream(input, opts(dir)).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_SPOOL_WRITE')).toBe(true);
    expect(consumed).toBe(true);
  });

  it('retain keeps the bytes until the last holder releases them', async () => {
    const spool = await Spool.fromStream(Readable.from(['w'.repeat(100)]), opts(tempDir()));
    const release = spool.retain();
    spool.dispose();
    expect(existsSync(spool.path!)).toBe(true);
    expect((await text(spool.open())).length).toBe(100);
    release();
    expect(existsSync(spool.path!)).toBe(false);
    expect(() => spool.open()).toThrow(/after dispose/);
  });
});
