/**
 * Just enough of the zip format to list an archive from its central directory (the listing
 * unzip tools trust) and to find each member's compressed bytes. Decompression happens in the
 * walker, streaming, so limits apply while bytes come out.
 */

export const ZIP_LOCAL_MAGIC = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

const EOCD_SIG = 0x06054b50;
const EOCD64_LOCATOR_SIG = 0x07064b50;
const EOCD64_SIG = 0x06064b50;
const CDH_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const EOCD_MIN = 22;
const MAX_COMMENT = 0xffff;

export interface ZipEntry {
  readonly name: string;
  readonly flags: number;
  readonly method: number;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  /** Offset of the local header, already shifted for data in front of the archive. */
  readonly localHeaderOffset: number;
  readonly encrypted: boolean;
  readonly isDirectory: boolean;
}

export interface ZipDirectory {
  readonly entries: readonly ZipEntry[];
  /** Entry count the archive declares, known before the directory is read. */
  readonly declaredEntries: number;
}

/** Random access to the archive's bytes. */
export interface ZipSource {
  readonly size: number;
  read(start: number, length: number): Promise<Buffer>;
}

export class ZipFormatError extends Error {
  override readonly name = 'ZipFormatError';
}

export function isZip(head: Buffer): boolean {
  return head.length >= 4 && head.subarray(0, 4).equals(ZIP_LOCAL_MAGIC);
}

/**
 * Reads the end-of-central-directory record and, unless the declared entry count already
 * exceeds `maxEntries` (then only the count is returned, nothing more is read), the directory.
 */
export async function readZipDirectory(src: ZipSource, maxEntries: number): Promise<ZipDirectory> {
  const tailLen = Math.min(src.size, EOCD_MIN + MAX_COMMENT);
  const tailStart = src.size - tailLen;
  const tail = await src.read(tailStart, tailLen);
  let eocd = -1;
  for (let i = tail.length - EOCD_MIN; i >= 0; i--) {
    if (tail[i] === 0x50 && tail.readUInt32LE(i) === EOCD_SIG) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ZipFormatError('no end of central directory record');
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  let cdEnd = tailStart + eocd;

  if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc >= 0 && tail.readUInt32LE(loc) === EOCD64_LOCATOR_SIG) {
      const at = Number(tail.readBigUInt64LE(loc + 8));
      const rec = await src.read(at, 56);
      if (rec.length < 56 || rec.readUInt32LE(0) !== EOCD64_SIG)
        throw new ZipFormatError('bad zip64 end record');
      entries = Number(rec.readBigUInt64LE(32));
      cdSize = Number(rec.readBigUInt64LE(40));
      cdOffset = Number(rec.readBigUInt64LE(48));
      cdEnd = at;
    }
  }
  if (entries > maxEntries) return { entries: [], declaredEntries: entries };
  // Bytes in front of the archive (a self-extractor stub, a prepended file) shift every offset.
  const shift = cdEnd - cdSize - cdOffset;
  if (shift < 0) throw new ZipFormatError('central directory outside the archive');
  const cd = await src.read(cdOffset + shift, cdSize);
  if (cd.length < cdSize) throw new ZipFormatError('truncated central directory');

  const out: ZipEntry[] = [];
  let p = 0;
  for (let n = 0; n < entries; n++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CDH_SIG)
      throw new ZipFormatError('bad central directory entry');
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let uncompressedSize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const nameBytes = cd.subarray(p + 46, p + 46 + nameLen);
    // Bit 11: UTF-8 names; otherwise CP437, read as latin1 (exact for the ASCII that matters here).
    const name = nameBytes.toString(flags & 0x800 ? 'utf8' : 'latin1');
    const extra = cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen);
    if (
      compressedSize === 0xffffffff ||
      uncompressedSize === 0xffffffff ||
      localHeaderOffset === 0xffffffff
    ) {
      const z64 = findExtra(extra, 0x0001);
      if (z64 !== undefined) {
        let q = 0;
        const next = (): number => {
          const v = q + 8 <= z64.length ? Number(z64.readBigUInt64LE(q)) : 0;
          q += 8;
          return v;
        };
        if (uncompressedSize === 0xffffffff) uncompressedSize = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
    }
    out.push({
      name,
      flags,
      method,
      compressedSize,
      uncompressedSize,
      localHeaderOffset: localHeaderOffset + shift,
      encrypted: (flags & 0x1) !== 0,
      isDirectory: name.endsWith('/') && uncompressedSize === 0,
    });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return { entries: out, declaredEntries: entries };
}

function findExtra(extra: Buffer, id: number): Buffer | undefined {
  let p = 0;
  while (p + 4 <= extra.length) {
    const hid = extra.readUInt16LE(p);
    const len = extra.readUInt16LE(p + 2);
    if (hid === id) return extra.subarray(p + 4, p + 4 + len);
    p += 4 + len;
  }
  return undefined;
}

/** Offset of the member's compressed bytes, read from its local header. */
export async function memberDataOffset(src: ZipSource, entry: ZipEntry): Promise<number> {
  const h = await src.read(entry.localHeaderOffset, 30);
  if (h.length < 30 || h.readUInt32LE(0) !== LOCAL_SIG) throw new ZipFormatError('bad local header');
  return entry.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
}
