import { Readable } from 'node:stream';
import { isSandgateError, SandgateError } from '../core/errors.js';
import { readChunks, type MessageSource } from '../core/message.js';
import { walkSplit } from './multipart.js';
import { singleLeafRoot, walkSingleLeaf } from './single-part.js';
import type { OnPart, WalkOptions, WalkSummary } from './types.js';
import { LimitReached, PartHandlerFailed, StopWalk, WalkState } from './walk-state.js';

export type {
  AnomalyKind,
  EmbeddedKind,
  OnPart,
  WalkAnomaly,
  WalkedPart,
  WalkLimits,
  WalkLimitKind,
  WalkOptions,
  WalkSummary,
} from './types.js';

/**
 * Walks a message: every MIME leaf, attached message and zip member is decoded, spooled (size
 * and SHA-256 known, reopenable) and handed to onPart one at a time; its bytes are released when
 * onPart settles. Reads the message as a stream; never holds a whole message or part in memory
 * above options.memoryThreshold. A limit ends the walk early and is reported in the summary.
 * Unparseable MIME rejects with ERR_MESSAGE_MALFORMED; an abort with ERR_ABORTED; whatever onPart
 * throws, as it threw it.
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
    await walkMime(state, readChunks(message), '', 0, options.onRaw);
  } catch (caught) {
    // The caller's own failure is never read as malformed MIME: rethrown as onPart threw it.
    const fromHandler = caught instanceof PartHandlerFailed;
    const err = caught instanceof PartHandlerFailed ? caught.error : caught;
    if (err instanceof LimitReached) limit = { kind: err.kind, at: err.at };
    else if (err instanceof StopWalk) stopped = true;
    else if (isSandgateError(err)) throw err;
    else if (options.signal?.aborted) {
      throw new SandgateError('ERR_ABORTED', 'the MIME walk was aborted', { cause: err });
    } else if (fromHandler) {
      throw err;
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
    anomalies: state.anomalies,
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
 * Walks one MIME message (the top one, or an attached message) read from `source`. The source is
 * closed when the walk ends, also early: a stream is destroyed, an iterator returned.
 */
export async function walkMime(
  state: WalkState,
  source: AsyncIterable<Buffer>,
  prefix: string,
  depth: number,
  tap?: (chunk: Buffer) => void,
): Promise<void> {
  const it = source[Symbol.asyncIterator]();
  const close = () => {
    if (source instanceof Readable) {
      if (!source.destroyed) source.destroy();
    } else {
      void it.return?.()?.catch(() => undefined);
    }
  };
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
      await walkSplit(state, close, first, next, prefix, depth);
    }
  } finally {
    close();
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
