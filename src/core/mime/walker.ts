import { PassThrough, type Readable, type Transform, type Writable } from 'node:stream';
import { createInflateRaw } from 'node:zlib';
import { MimeNode, Splitter } from '@zone-eu/mailsplit';
import type { SplitterChunk } from '@zone-eu/mailsplit';
import { Decoder as Base64Decoder } from 'libbase64';
import { isSandgateError, SandgateError } from '../errors.js';
import type { MessageSource } from '../message.js';
import { PartSpool } from './part-spool.js';
import { drained, pump } from './pump.js';
import { QpDecoder } from './qp-decoder.js';
import type { OnPart, WalkedPart, WalkLimitKind, WalkOptions, WalkSummary } from './types.js';
import { isZip, memberDataOffset, readZipDirectory, ZipFormatError, type ZipEntry } from './zip.js';

export type { OnPart, WalkedPart, WalkLimits, WalkLimitKind, WalkOptions, WalkSummary } from './types.js';

const DEFAULT_MEMORY_THRESHOLD = 1024 * 1024;

/** Thrown inside the walk when a limit is reached; turned into WalkSummary.limit. */
class LimitReached extends Error {
  constructor(
    readonly kind: WalkLimitKind,
    readonly at: string,
  ) {
    super(`walk limit ${kind} reached at ${at}`);
  }
}

/** Thrown inside the walk when onPart returned 'stop'. */
class StopWalk extends Error {}

interface PartMeta {
  readonly path: string;
  readonly depth: number;
  readonly contentType: string;
  readonly filename?: string;
  readonly isAttachment: boolean;
}

class WalkState {
  parts = 0;
  members = 0;
  bytes = 0;
  unreadableArchives = 0;
  readonly threshold: number;
  constructor(
    readonly options: WalkOptions,
    readonly onPart: OnPart,
  ) {
    this.threshold = options.memoryThreshold ?? DEFAULT_MEMORY_THRESHOLD;
  }

  checkAborted(): void {
    if (this.options.signal?.aborted) {
      throw new SandgateError('ERR_ABORTED', 'the MIME walk was aborted', {
        cause: this.options.signal.reason,
      });
    }
  }

  /** A spool whose every byte counts against the total-bytes budget. */
  newSpool(path: string, extraGuard?: (n: number) => void): PartSpool {
    return new PartSpool(this.options.spoolDir, this.threshold, (n) => {
      this.bytes += n;
      if (this.bytes > this.options.limits.maxTotalBytes) throw new LimitReached('total-bytes', path);
      extraGuard?.(n);
    });
  }
}

/**
 * Walks a message: every MIME leaf, attached message and zip member is decoded, spooled (size
 * and SHA-256 known, reopenable) and handed to onPart one at a time; its bytes are released when
 * onPart settles. Reads the message as a stream; never holds a whole message or part in memory
 * above options.memoryThreshold. A limit ends the walk early and is reported in the summary.
 * Unparseable MIME rejects with ERR_MESSAGE_MALFORMED; an abort with ERR_ABORTED.
 */
export async function walkMessage(
  message: MessageSource,
  options: WalkOptions,
  onPart: OnPart,
): Promise<WalkSummary> {
  const state = new WalkState(options, onPart);
  let limit: WalkSummary['limit'];
  let stopped = false;
  try {
    state.checkAborted();
    await walkMime(state, message.open(), '', 0, options.onRaw);
  } catch (err) {
    if (err instanceof LimitReached) limit = { kind: err.kind, at: err.at };
    else if (err instanceof StopWalk) stopped = true;
    else if (isSandgateError(err)) throw err;
    else if (options.signal?.aborted) {
      throw new SandgateError('ERR_ABORTED', 'the MIME walk was aborted', { cause: err });
    } else {
      throw new SandgateError('ERR_MESSAGE_MALFORMED', 'the message could not be parsed as MIME', {
        cause: err,
        details: { reason: errorReason(err) },
      });
    }
  }
  return {
    parts: state.parts,
    members: state.members,
    bytes: state.bytes,
    stopped,
    unreadableArchives: state.unreadableArchives,
    ...(limit !== undefined ? { limit } : {}),
  };
}

function errorReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'parse';
}

/** Header blocks larger than this skip the single-part fast path (the splitter still reads them). */
const HEADER_PROBE_MAX = 256 * 1024;

/**
 * Writes one leaf's raw body through its transfer decoder into its spool. A body without a
 * transfer encoding to undo (7bit, 8bit, binary) goes straight into the spool, no stream between.
 */
class Leaf {
  /** The decoder stage and the pipe into the spool; undefined for a body written as it is. */
  private readonly stage: { readonly entry: Writable; readonly done: Promise<void> } | undefined;

  constructor(
    readonly node: MimeNode,
    readonly meta: PartMeta,
    readonly spool: PartSpool,
    encoding: string,
  ) {
    const decoder =
      encoding === 'base64'
        ? new Base64Decoder()
        : encoding === 'quoted-printable'
          ? new QpDecoder()
          : undefined;
    if (decoder !== undefined) {
      const done = pump([decoder, spool.writable()]);
      done.catch(() => undefined); // awaited in finish(); a failure also shows through write()
      this.stage = { entry: decoder, done };
    }
  }

  /** Resolves at once unless the leaf pushes back; rejects when the leaf failed. */
  async write(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    if (this.stage === undefined) {
      await this.spool.write(chunk);
      return;
    }
    if (this.stage.entry.write(chunk)) return;
    await Promise.race([drained(this.stage.entry), this.stage.done]);
  }

  async finish(state: WalkState): Promise<void> {
    try {
      if (this.stage === undefined) {
        await this.spool.end();
      } else {
        this.stage.entry.end();
        await this.stage.done;
      }
    } catch (err) {
      this.spool.dispose();
      throw err;
    }
    await deliver(state, this.spool, this.meta);
  }

  abandon(): void {
    if (this.stage !== undefined && !this.stage.entry.destroyed) {
      this.stage.entry.destroy(new Error('walk ended'));
    }
    this.spool.dispose();
  }
}

/** Walks one MIME message (the top one, or an attached message) read from `source`. */
async function walkMime(
  state: WalkState,
  source: Readable,
  prefix: string,
  depth: number,
  tap?: (chunk: Buffer) => void,
): Promise<void> {
  const it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const next = async (): Promise<Buffer | undefined> => {
    state.checkAborted();
    const r = await it.next();
    if (r.done === true) return undefined;
    tap?.(r.value);
    return r.value;
  };
  try {
    // Read up to the end of the top header block. A message that is not multipart is one leaf:
    // its body needs no boundary search, so it bypasses the splitter's line-by-line pass.
    const pre: Buffer[] = [];
    let first: Buffer | undefined;
    let headerEnd = -1;
    for (let len = 0; headerEnd < 0 && len < HEADER_PROBE_MAX;) {
      const c = await next();
      if (c === undefined) break;
      pre.push(c);
      len += c.length;
      first = pre.length === 1 ? c : Buffer.concat(pre, len);
      headerEnd = findHeaderEnd(first);
    }
    const root =
      headerEnd >= 0 && first !== undefined ? singleLeafRoot(first.subarray(0, headerEnd)) : undefined;
    if (root !== undefined && first !== undefined) {
      await walkSingleLeaf(state, root, first.subarray(headerEnd), next, prefix, depth);
    } else {
      await walkSplit(state, source, first, next, prefix, depth);
    }
  } finally {
    if (!source.destroyed) source.destroy();
  }
}

/** Offset just past the empty line that ends the header block, or -1. */
function findHeaderEnd(buf: Buffer): number {
  if (buf[0] === 0x0a) return 1;
  if (buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  const crlf = buf.indexOf('\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf < 0) return lf < 0 ? -1 : lf + 2;
  if (lf < 0 || crlf < lf) return crlf + 3;
  return lf + 2;
}

const MULTIPART_HINT = /^content-type:\s*multipart\//im;

/** The root node when the header block describes a single (non-multipart) part. */
function singleLeafRoot(headerBlock: Buffer): MimeNode | undefined {
  if (MULTIPART_HINT.test(headerBlock.toString('latin1'))) return undefined;
  // The splitter's own node class, so the part reads exactly as the splitter would read it.
  const root = new MimeNode(false, { ignoreEmbedded: true });
  root.addHeaderChunk(headerBlock);
  root.parseHeaders();
  return root.multipart === false ? root : undefined;
}

async function walkSingleLeaf(
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

/** The general case: mailsplit's Splitter finds the parts; body bytes go to each leaf. */
async function walkSplit(
  state: WalkState,
  source: Readable,
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
  try {
    for await (const item of splitter as AsyncIterable<SplitterChunk>) {
      if (item.type === 'node') {
        if (leaf !== undefined) {
          const done = leaf;
          leaf = undefined;
          await done.finish(state);
        }
        if (item.multipart !== false) continue;
        state.parts++;
        const path = joinPath(prefix, item);
        if (state.parts > state.options.limits.maxParts) throw new LimitReached('parts', path);
        leaf = startLeaf(state, item, path, depth);
      } else if (item.type === 'body' && leaf !== undefined && item.node === leaf.node) {
        await leaf.write(item.value);
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
    if (!source.destroyed) source.destroy();
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

function startLeaf(state: WalkState, node: MimeNode, path: string, depth: number): Leaf {
  const contentType = node.contentType === false ? 'text/plain' : node.contentType;
  const filename = node.filename === false || node.filename === '' ? undefined : node.filename;
  const meta: PartMeta = {
    path,
    depth,
    contentType,
    ...(filename !== undefined ? { filename } : {}),
    isAttachment: node.disposition === 'attachment' || filename !== undefined,
  };
  return new Leaf(node, meta, state.newSpool(path), node.encoding === false ? '' : node.encoding);
}

/** Hands one spooled part to onPart, then walks into it if it is a container; disposes it. */
async function deliver(
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

/** Yields the members of a spooled zip archive (recursively through deliver()). */
async function walkZip(state: WalkState, archive: PartSpool, path: string, depth: number): Promise<void> {
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
    const spool = await extractMember(state, archive, entry, memberPath);
    if (spool === undefined) await deliverOpaque(state, meta, { damaged: true });
    else await deliver(state, spool, meta);
  }
}

/** A member the walker cannot read: yielded with no content and a flag saying why. */
async function deliverOpaque(state: WalkState, meta: PartMeta, extra: Partial<WalkedPart>): Promise<void> {
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

/** Decompresses one member into a spool; undefined when its bytes are damaged. */
async function extractMember(
  state: WalkState,
  archive: PartSpool,
  entry: ZipEntry,
  memberPath: string,
): Promise<PartSpool | undefined> {
  const { limits } = state.options;
  let out = 0;
  const spool = state.newSpool(memberPath, (n) => {
    out += n;
    if (out > limits.ratioMinBytes && out > limits.maxExpansionRatio * Math.max(entry.compressedSize, 1)) {
      throw new LimitReached('ratio', memberPath);
    }
  });
  try {
    const start = await memberDataOffset(archive, entry);
    const stages: (Readable | Transform | Writable)[] = [
      archive.open({ start, end: start + entry.compressedSize }),
    ];
    if (entry.method === 8) stages.push(createInflateRaw({ chunkSize: 64 * 1024 }));
    stages.push(spool.writable());
    await pump(stages, state.options.signal);
    return spool;
  } catch (err) {
    spool.dispose();
    if (err instanceof LimitReached || isSandgateError(err) || state.options.signal?.aborted) throw err;
    // A damaged member (bad local header, corrupt deflate data).
    return undefined;
  }
}
