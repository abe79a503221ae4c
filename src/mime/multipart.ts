import type { Writable } from 'node:stream';
import { Splitter, type MimeNode } from '@zone-eu/mailsplit';
import type { SplitterChunk } from '@zone-eu/mailsplit';
import { checkNodeHeaders, EpilogueWatch } from './anomalies.js';
import { startLeaf, type Leaf } from './leaf.js';
import { drained } from './pump.js';
import { LimitReached, type WalkState } from './walk-state.js';

/** The general case: mailsplit's Splitter finds the parts; body bytes go to each leaf. */
export async function walkSplit(
  state: WalkState,
  /** Closes the message's source: the feeding loop then ends. */
  closeSource: () => void,
  first: Buffer | undefined,
  next: () => Promise<Buffer | undefined>,
  prefix: string,
  depth: number,
): Promise<void> {
  const splitter = new Splitter({ ignoreEmbedded: true, maxChildNodes: state.options.limits.maxParts + 1 });
  const feeding = (async () => {
    try {
      for (let c = first; c !== undefined; c = await next()) {
        if (splitter.destroyed) return;
        if (!splitter.write(c)) await drained(splitter as unknown as Writable);
      }
      if (!splitter.destroyed) splitter.end();
    } catch (err) {
      splitter.destroy(err as Error);
    }
  })();

  let leaf: Leaf | undefined;
  /** Each multipart's own data (preamble, delimiters, epilogue), watched for parts after its end. */
  const epilogues = new Map<MimeNode, EpilogueWatch>();
  try {
    for await (const item of splitter as AsyncIterable<SplitterChunk>) {
      if (item.type === 'node') {
        if (leaf !== undefined) {
          const done = leaf;
          leaf = undefined;
          await done.finish(state);
        }
        if (item.multipart !== false) {
          const path = joinPath(prefix, item);
          checkNodeHeaders(state, item, path);
          if (item._boundary !== false)
            epilogues.set(item, new EpilogueWatch(item._boundary.toString('latin1')));
          continue;
        }
        state.parts++;
        const path = joinPath(prefix, item);
        if (state.parts > state.options.limits.maxParts) throw new LimitReached('parts', path);
        leaf = startLeaf(state, item, path, depth);
      } else if (item.type === 'body' && leaf !== undefined && item.node === leaf.node) {
        await leaf.write(item.value);
      } else if (item.type === 'data') {
        // Typed as always set; the delimiter lines themselves come with node false.
        const owner = item.node as MimeNode | false;
        const watch = owner === false ? undefined : epilogues.get(owner);
        if (owner !== false && watch?.push(item.value) === true) {
          state.flag('boundary-after-close', joinPath(prefix, owner));
        }
      }
    }
    if (leaf !== undefined) {
      const done = leaf;
      leaf = undefined;
      await done.finish(state);
    }
  } catch (err) {
    if (isMaxChildNodes(err)) throw new LimitReached('parts', prefix || '1');
    throw err;
  } finally {
    leaf?.abandon();
    if (!splitter.destroyed) splitter.destroy();
    closeSource();
    await feeding;
  }
}

function isMaxChildNodes(err: unknown): boolean {
  return (
    (err as { code?: unknown } | null)?.code === 'EMAXLEN' &&
    /child nodes/i.test(err instanceof Error ? err.message : '')
  );
}

function joinPath(prefix: string, node: MimeNode): string {
  const nr = node.partNr === false ? '' : node.partNr.filter((x) => typeof x === 'number').join('.');
  const own = nr === '' ? '1' : nr;
  return prefix === '' ? own : `${prefix}.${own}`;
}
