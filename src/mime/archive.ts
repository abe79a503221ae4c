import { PassThrough, type Readable, type Transform } from 'node:stream';
import { createInflateRaw } from 'node:zlib';
import { isSandgateError } from '../core/errors.js';
import { deliver } from './deliver.js';
import type { PartSpool } from './part-spool.js';
import { pump } from './pump.js';
import type { WalkedPart } from './types.js';
import { LimitReached, StopWalk, type PartMeta, type WalkState } from './walk-state.js';
import { memberDataOffset, readZipDirectory, ZipFormatError, type ZipEntry } from './zip.js';

/** Yields the members of a spooled zip archive (recursively through deliver()). */
export async function walkZip(
  state: WalkState,
  archive: PartSpool,
  path: string,
  depth: number,
): Promise<void> {
  const { limits } = state.options;
  const remaining = limits.maxArchiveMembers - state.members;
  let dir;
  try {
    dir = await readZipDirectory(archive, remaining);
  } catch (err) {
    if (!(err instanceof ZipFormatError)) throw err;
    state.unreadableArchives++;
    return;
  }
  if (dir.declaredEntries > remaining) throw new LimitReached('members', path);
  for (const entry of dir.entries) {
    if (entry.isDirectory) continue;
    state.checkAborted();
    state.members++;
    const memberPath = `${path}/${entry.name}`;
    const meta: PartMeta = {
      path: memberPath,
      depth,
      contentType: 'application/octet-stream',
      filename: baseName(entry.name),
      isAttachment: true,
    };
    if (entry.encrypted || (entry.method !== 0 && entry.method !== 8)) {
      await deliverOpaque(
        state,
        meta,
        entry.encrypted ? { encrypted: true } : { unsupportedMethod: entry.method },
      );
      continue;
    }
    const spool = await extractZipMember(state, archive, entry, memberPath);
    if (spool === undefined) await deliverOpaque(state, meta, { damaged: true });
    else await deliver(state, spool, meta);
  }
}

/** A member the walker cannot read: yielded with no content and a flag saying why. */
export async function deliverOpaque(
  state: WalkState,
  meta: PartMeta,
  extra: Partial<WalkedPart>,
): Promise<void> {
  const part: WalkedPart = {
    ...meta,
    ...extra,
    size: 0,
    sha256: '',
    head: Buffer.alloc(0),
    open: () => new PassThrough().end(),
    scan: () => Promise.resolve(),
  };
  if ((await state.onPart(part)) === 'stop') throw new StopWalk();
}

function baseName(name: string): string {
  const cut = Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\'));
  return cut >= 0 ? name.slice(cut + 1) : name;
}

/** Decompresses one zip member into a spool; undefined when its bytes are damaged. */
async function extractZipMember(
  state: WalkState,
  archive: PartSpool,
  entry: ZipEntry,
  memberPath: string,
): Promise<PartSpool | undefined> {
  let start: number;
  try {
    start = await memberDataOffset(archive, entry);
  } catch (err) {
    if (isSandgateError(err) || state.options.signal?.aborted) throw err;
    return undefined; // a damaged local header
  }
  const stages: (Readable | Transform)[] = [archive.open({ start, end: start + entry.compressedSize })];
  if (entry.method === 8) stages.push(createInflateRaw({ chunkSize: 64 * 1024 }));
  return extractMember(state, memberPath, entry.compressedSize, stages);
}

/**
 * Runs an archive member's bytes through `stages` (a reader, then a decompressor) into a spool,
 * under the walk's ratio limit against `compressedSize`; undefined when the bytes are damaged.
 */
export async function extractMember(
  state: WalkState,
  memberPath: string,
  compressedSize: number,
  stages: readonly (Readable | Transform)[],
): Promise<PartSpool | undefined> {
  const { limits } = state.options;
  let out = 0;
  const spool = state.newSpool(memberPath, (n) => {
    out += n;
    if (out > limits.ratioMinBytes && out > limits.maxExpansionRatio * Math.max(compressedSize, 1)) {
      throw new LimitReached('ratio', memberPath);
    }
  });
  try {
    await pump([...stages, spool.writable()], state.options.signal);
    return spool;
  } catch (err) {
    spool.dispose();
    if (err instanceof LimitReached || isSandgateError(err) || state.options.signal?.aborted) throw err;
    // A damaged member (bad local header, corrupt compressed data).
    return undefined;
  }
}
