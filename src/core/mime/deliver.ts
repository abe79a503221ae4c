import { walkZip } from './archive.js';
import type { PartSpool } from './part-spool.js';
import type { WalkedPart } from './types.js';
import { LimitReached, StopWalk, type PartMeta, type WalkState } from './walk-state.js';
import { walkMime } from './walker.js';
import { isZip } from './zip.js';

/** Hands one spooled part to onPart, then walks into it if it is a container; disposes it. */
export async function deliver(
  state: WalkState,
  spool: PartSpool,
  meta: PartMeta,
  extra: Partial<WalkedPart> = {},
): Promise<void> {
  try {
    state.checkAborted();
    const expand = state.options.expandArchives !== false;
    const container =
      expand && isZip(spool.head)
        ? 'zip'
        : meta.contentType === 'message/rfc822' || meta.contentType === 'message/global'
          ? 'message'
          : undefined;
    const part: WalkedPart = {
      ...meta,
      ...extra,
      size: spool.size,
      // Computed when first read (an in-memory part is hashed only if someone asks).
      get sha256() {
        return spool.sha256;
      },
      head: spool.head,
      ...(container !== undefined ? { container } : {}),
      open: () => spool.open(),
      scan: (visit, signal) => spool.scan(visit, signal),
    };
    if ((await state.onPart(part)) === 'stop') throw new StopWalk();
    if (container === undefined) return;
    if (meta.depth + 1 > state.options.limits.maxDepth) throw new LimitReached('depth', meta.path);
    if (container === 'message') await walkMime(state, spool.open(), meta.path, meta.depth + 1);
    else await walkZip(state, spool, meta.path, meta.depth + 1);
  } finally {
    spool.dispose();
  }
}
