import { MimeNode } from '@zone-eu/mailsplit';
import { startLeaf, type Leaf } from './leaf.js';
import { LimitReached, type WalkState } from './walk-state.js';

const MULTIPART_HINT = /^content-type:\s*multipart\//im;

/** The root node when the header block describes a single (non-multipart) part. */
export function singleLeafRoot(headerBlock: Buffer): MimeNode | undefined {
  if (MULTIPART_HINT.test(headerBlock.toString('latin1'))) return undefined;
  // The splitter's own node class, so the part reads exactly as the splitter would read it.
  const root = new MimeNode(false, { ignoreEmbedded: true });
  root.addHeaderChunk(headerBlock);
  root.parseHeaders();
  return root.multipart === false ? root : undefined;
}

export async function walkSingleLeaf(
  state: WalkState,
  root: MimeNode,
  bodyStart: Buffer,
  next: () => Promise<Buffer | undefined>,
  prefix: string,
  depth: number,
): Promise<void> {
  const path = prefix === '' ? '1' : `${prefix}.1`;
  state.parts++;
  if (state.parts > state.options.limits.maxParts) throw new LimitReached('parts', path);
  let leaf: Leaf | undefined = startLeaf(state, root, path, depth);
  try {
    await leaf.write(bodyStart);
    for (let c = await next(); c !== undefined; c = await next()) await leaf.write(c);
    const done = leaf;
    leaf = undefined;
    await done.finish(state);
  } finally {
    leaf?.abandon();
  }
}
