import { createGunzip } from 'node:zlib';
import { deliverOpaque, extractMember } from './archive.js';
import type { PartSpool } from './part-spool.js';
import { LimitReached, type PartMeta, type WalkState } from './walk-state.js';
import { deliver } from './deliver.js';

const FEXTRA = 0x04;
const FNAME = 0x08;

/** A gzip stream (RFC 1952, deflate): 1f 8b 08. */
export function isGzip(head: Buffer): boolean {
  return head.length >= 10 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08;
}

/**
 * The name of the file inside: the header's FNAME when present (what gunzip -N restores),
 * else the outer name without .gz (a .tgz holds a .tar).
 */
export function gzipInnerName(head: Buffer, outer: string | undefined): string | undefined {
  const flags = head[3] as number;
  let p = 10;
  if (flags & FEXTRA) p += 2 + (p + 2 <= head.length ? head.readUInt16LE(p) : 0);
  if (flags & FNAME && p < head.length) {
    const end = head.indexOf(0, p);
    if (end > p) {
      const name = head.toString('latin1', p, end);
      return name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1) || undefined;
    }
  }
  if (outer === undefined) return undefined;
  if (/\.tgz$/i.test(outer)) return outer.replace(/\.tgz$/i, '.tar');
  const inner = outer.replace(/\.gz(ip)?$/i, '');
  return inner !== outer && inner !== '' ? inner : undefined;
}

/**
 * Yields the file inside a gzip part as an archive member (concatenated gzip members decompress
 * as one file, as gunzip writes them), under the same ratio and size limits as a zip member.
 */
export async function walkGzip(state: WalkState, archive: PartSpool, outer: PartMeta): Promise<void> {
  state.checkAborted();
  state.members++;
  const name = gzipInnerName(archive.head, outer.filename);
  const path = `${outer.path}/${name ?? 'gunzipped'}`;
  if (state.members > state.options.limits.maxArchiveMembers) throw new LimitReached('members', path);
  const meta: PartMeta = {
    path,
    depth: outer.depth + 1,
    contentType: 'application/octet-stream',
    ...(name !== undefined ? { filename: name } : {}),
    isAttachment: true,
  };
  const spool = await extractMember(state, path, archive.size, [
    archive.open(),
    createGunzip({ chunkSize: 64 * 1024 }),
  ]);
  if (spool === undefined) await deliverOpaque(state, meta, { damaged: true });
  else await deliver(state, spool, meta);
}
