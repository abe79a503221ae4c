import type { Writable } from 'node:stream';
import type { MimeNode } from '@zone-eu/mailsplit';
import { Decoder as Base64Decoder } from 'libbase64';
import { BoundaryWatch, checkNodeHeaders } from './anomalies.js';
import { deliver } from './deliver.js';
import type { PartSpool } from './part-spool.js';
import { drained, pump } from './pump.js';
import { QpDecoder } from './qp-decoder.js';
import type { PartMeta, WalkState } from './walk-state.js';

/**
 * Writes one leaf's raw body through its transfer decoder into its spool. A body without a
 * transfer encoding to undo (7bit, 8bit, binary) goes straight into the spool, no stream between.
 */
export class Leaf {
  /** The decoder stage and the pipe into the spool; undefined for a body written as it is. */
  private readonly stage: { readonly entry: Writable; readonly done: Promise<void> } | undefined;
  /** Looks for prefix matches of the enclosing boundaries in the raw body (none in a single part). */
  private readonly boundaries: BoundaryWatch | undefined;

  constructor(
    readonly node: MimeNode,
    readonly meta: PartMeta,
    readonly spool: PartSpool,
    encoding: string,
    private readonly state: WalkState,
  ) {
    this.boundaries = BoundaryWatch.forLeaf(node);
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
    const stray = this.boundaries?.push(chunk);
    if (stray !== undefined) this.state.flag(stray, this.meta.path);
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

export function startLeaf(state: WalkState, node: MimeNode, path: string, depth: number): Leaf {
  const contentType = node.contentType === false ? 'text/plain' : node.contentType;
  const filename = node.filename === false || node.filename === '' ? undefined : node.filename;
  const encoding = node.encoding === false ? '' : node.encoding;
  const otherNames = checkNodeHeaders(state, node, path);
  const meta: PartMeta = {
    path,
    depth,
    contentType,
    ...(filename !== undefined ? { filename } : {}),
    ...(otherNames.length > 0 ? { otherNames } : {}),
    isAttachment: node.disposition === 'attachment' || filename !== undefined,
    encoding,
  };
  return new Leaf(node, meta, state.newSpool(path), encoding, state);
}
