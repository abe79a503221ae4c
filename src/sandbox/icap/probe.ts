import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { EICAR } from '../rules/threats.js';
import type { IcapObject } from './scanner.js';

/** The EICAR test file itself: every antivirus service must call it infected. */
export function eicarProbe(): IcapObject {
  return {
    open: () => Readable.from([Buffer.from(EICAR)]),
    size: EICAR.length,
    name: 'eicar.com',
    contentType: 'application/octet-stream',
    what: 'EICAR probe',
  };
}

const PADDING_NAME = Buffer.from('padding.bin', 'latin1');
const EICAR_NAME = Buffer.from('eicar.com', 'latin1');
const LOCAL_HEADER = 30;
const CENTRAL_HEADER = 46;
const END_RECORD = 22;
const ZERO_BLOCK = Buffer.alloc(64 * 1024);
/** A stored zip member is at most this big without Zip64. */
const MAX_STORED = 0xffffffff - 1;

/** Bytes of a size probe without its padding. */
export const SIZE_PROBE_OVERHEAD =
  2 * (LOCAL_HEADER + CENTRAL_HEADER) +
  2 * PADDING_NAME.length +
  2 * EICAR_NAME.length +
  EICAR.length +
  END_RECORD;

/**
 * A zip of exactly `size` bytes: a stored member of zeros, then eicar.com as the last member.
 * An engine opens the zip and finds EICAR as a file of its own; a service that skips objects
 * this big (c-icap's MaxObjectSize outside avscan, an engine's file size limit) answers as if it
 * were clean. Streamed, never held in memory. Undefined when `size` is too small or too big for a
 * plain zip.
 */
export function sizeProbe(size: number): IcapObject | undefined {
  const padding = size - SIZE_PROBE_OVERHEAD;
  if (padding < 0 || padding > MAX_STORED) return undefined;
  let paddingCrc = 0;
  for (let left = padding; left > 0; left -= ZERO_BLOCK.length) {
    paddingCrc = crc32(ZERO_BLOCK.subarray(0, Math.min(left, ZERO_BLOCK.length)), paddingCrc);
  }
  const eicarCrc = crc32(EICAR);
  const paddingHeader = localHeader(PADDING_NAME, paddingCrc, padding);
  const eicarOffset = paddingHeader.length + padding;
  const eicarHeader = localHeader(EICAR_NAME, eicarCrc, EICAR.length);
  const centralStart = eicarOffset + eicarHeader.length + EICAR.length;
  const central = Buffer.concat([
    centralHeader(PADDING_NAME, paddingCrc, padding, 0),
    centralHeader(EICAR_NAME, eicarCrc, EICAR.length, eicarOffset),
  ]);
  const end = Buffer.alloc(END_RECORD);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(2, 8);
  end.writeUInt16LE(2, 10);
  end.writeUInt32LE(central.length, 12);
  end.writeUInt32LE(centralStart, 16);
  function* parts(): Generator<Buffer> {
    yield paddingHeader;
    for (let left = padding; left > 0; left -= ZERO_BLOCK.length) {
      yield ZERO_BLOCK.subarray(0, Math.min(left, ZERO_BLOCK.length));
    }
    yield eicarHeader;
    yield Buffer.from(EICAR);
    yield central;
    yield end;
  }
  return {
    open: () => Readable.from(parts(), { objectMode: false }),
    size,
    name: 'size-probe.zip',
    contentType: 'application/zip',
    what: 'size probe',
  };
}

function localHeader(name: Buffer, crc: number, size: number): Buffer {
  const h = Buffer.alloc(LOCAL_HEADER + name.length);
  h.writeUInt32LE(0x04034b50, 0);
  h.writeUInt16LE(10, 4); // version needed
  h.writeUInt16LE(0, 6); // flags
  h.writeUInt16LE(0, 8); // stored
  h.writeUInt16LE(0, 10); // time
  h.writeUInt16LE(0x21, 12); // date 1980-01-01
  h.writeUInt32LE(crc >>> 0, 14);
  h.writeUInt32LE(size, 18);
  h.writeUInt32LE(size, 22);
  h.writeUInt16LE(name.length, 26);
  h.writeUInt16LE(0, 28);
  name.copy(h, LOCAL_HEADER);
  return h;
}

function centralHeader(name: Buffer, crc: number, size: number, offset: number): Buffer {
  const h = Buffer.alloc(CENTRAL_HEADER + name.length);
  h.writeUInt32LE(0x02014b50, 0);
  h.writeUInt16LE(20, 4); // made by
  h.writeUInt16LE(10, 6); // needed
  h.writeUInt16LE(0, 8);
  h.writeUInt16LE(0, 10);
  h.writeUInt16LE(0, 12);
  h.writeUInt16LE(0x21, 14);
  h.writeUInt32LE(crc >>> 0, 16);
  h.writeUInt32LE(size, 20);
  h.writeUInt32LE(size, 24);
  h.writeUInt16LE(name.length, 28);
  h.writeUInt32LE(offset, 42);
  name.copy(h, CENTRAL_HEADER);
  return h;
}
