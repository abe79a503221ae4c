import type { Readable } from 'node:stream';
import { isSandgateError, SandgateError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { createMark } from '../core/mark.js';
import type { MessageSource } from '../core/message.js';
import type { AllowList, DeliveryReceipt, MailDelivery, QuarantineStore } from '../core/ports.js';
import type { QuarantineFilter, QuarantineItem } from '../core/state-records.js';
import { walkMessage } from '../mime/walker.js';
import type { WalkLimits } from '../mime/types.js';
import { bodyPreview, readDisplayHeaders, type BodyPreview, type DisplayHeader } from './display.js';
import { releasedMessage } from './released-message.js';

export interface AttachmentInfo {
  /** IMAP-style part path; archive members append /name. */
  readonly path: string;
  readonly filename?: string;
  readonly contentType: string;
  readonly size: number;
  readonly sha256: string;
  readonly depth: number;
  /** This part is what a scanner's verdict names. */
  readonly blocking: boolean;
}

export interface ItemDetails {
  readonly item: QuarantineItem;
  /** Every header field, decoded for display (`value`) and as written (`raw`). */
  readonly headers: readonly DisplayHeader[];
  /** The first lines of the text body (never rendered as HTML). */
  readonly preview: BodyPreview;
  readonly attachments: readonly AttachmentInfo[];
  /** Set when the walk could not finish (malformed MIME, a limit): the list may be incomplete. */
  readonly walkProblem?: string;
}

export interface ReleaseOptions {
  /** Who releases it (operator name, "api:<addr>"). */
  readonly by: string;
  /** Deliver to these addresses instead of the original recipients. */
  readonly to?: readonly string[];
  /** Add the blocking attachments' SHA-256 to the allowlist. */
  readonly allowHash?: boolean;
  readonly signal?: AbortSignal;
}

export interface ReleaseResult {
  readonly id: string;
  readonly delivery: DeliveryReceipt;
  readonly releasedAt: number;
  /** Hashes put on the allowlist (new or already there). */
  readonly allowed: readonly string[];
}

export interface QuarantineServiceOptions {
  readonly store: QuarantineStore;
  readonly allowList: AllowList;
  readonly markKey: Buffer;
  /** Where releases go (quarantine.release.target, built by the composition root); unset: release is refused. */
  readonly delivery?: MailDelivery;
  readonly walk: { readonly spoolDir: string; readonly limits: WalkLimits; readonly memoryThreshold: number };
  /** The body preview parses messages up to this size (scan.maxMessageSize); larger ones get none. */
  readonly previewMaxBytes?: number;
  readonly log: Logger;
  readonly now?: () => number;
}

/** What operators do with quarantined mail, for the CLI and the admin API alike. */
export class QuarantineService {
  private readonly now: () => number;

  constructor(private readonly o: QuarantineServiceOptions) {
    this.now = o.now ?? Date.now;
  }

  get store(): QuarantineStore {
    return this.o.store;
  }

  list(filter: QuarantineFilter = {}): Promise<QuarantineItem[]> {
    return this.o.store.list(filter);
  }

  get(id: string): Promise<QuarantineItem> {
    return this.o.store.get(id);
  }

  /** The original message bytes. */
  async export(id: string): Promise<Readable> {
    return this.o.store.openOriginal(await this.o.store.get(id));
  }

  async delete(id: string, by: string): Promise<QuarantineItem> {
    const item = await this.o.store.delete(id);
    this.o.log.info({ event: 'quarantine.deleted', quarantineId: id, by }, 'quarantine item deleted');
    return item;
  }

  /** Headers, verdict and every attachment with name, type and hash. */
  async show(id: string): Promise<ItemDetails> {
    const item = await this.o.store.get(id);
    const headers = await readDisplayHeaders(this.o.store.openOriginal(item));
    const preview = await bodyPreview(() => this.o.store.openOriginal(item), item.size, {
      maxBytes: this.o.previewMaxBytes ?? Number.POSITIVE_INFINITY,
    });
    const attachments: AttachmentInfo[] = [];
    const blockingPaths = blockingPartPaths(item);
    let walkProblem: string | undefined;
    try {
      const summary = await walkMessage(this.sourceOf(item), this.walkOptions(), (part) => {
        if (!part.isAttachment && part.filename === undefined && part.depth === 0 && !part.container)
          return Promise.resolve();
        attachments.push({
          path: part.path,
          ...(part.filename !== undefined ? { filename: part.filename } : {}),
          contentType: part.contentType,
          size: part.size,
          sha256: part.sha256,
          depth: part.depth,
          blocking: blockingPaths.has(part.path),
        });
        return Promise.resolve();
      });
      if (summary.limit)
        walkProblem = `walk stopped at a limit (${summary.limit.kind} at ${summary.limit.at})`;
    } catch (err) {
      walkProblem = isSandgateError(err) ? `${err.code}: ${err.message}` : String(err);
    }
    return { item, headers, preview, attachments, ...(walkProblem !== undefined ? { walkProblem } : {}) };
  }

  /**
   * Hands the message on with its original envelope (or `to`), a fresh `released` mark, and
   * records the release. Any failure leaves the item as it was and says why.
   */
  async release(id: string, options: ReleaseOptions): Promise<ReleaseResult> {
    const item = await this.o.store.get(id);
    const target = this.o.delivery;
    if (target === undefined) {
      throw new SandgateError('ERR_QUARANTINE_RELEASE', 'no release target: set quarantine.release.target', {
        details: { id },
      });
    }
    const recipients =
      options.to !== undefined && options.to.length > 0 ? [...options.to] : [...item.envelope.recipients];
    let hashes: string[] = [];
    if (options.allowHash) {
      hashes = await this.blockingHashes(item);
      if (hashes.length === 0) {
        throw new SandgateError(
          'ERR_QUARANTINE_RELEASE',
          'nothing to allow: the verdict names no attachment with content; release without --allow-hash',
          { details: { id } },
        );
      }
    }
    const at = this.now();
    const mark = createMark(
      this.o.markKey,
      { kind: 'released', msgId: item.msgId, at: Math.floor(at / 1000) },
      item.contentKey,
    );
    let delivery: DeliveryReceipt;
    try {
      delivery = await target.deliver({
        sender: item.envelope.sender,
        recipients,
        msgId: item.msgId,
        message: () => releasedMessage(this.o.store.openOriginal(item), { mark }),
        ...(options.signal !== undefined ? { signal: options.signal } : {}),
      });
    } catch (cause) {
      throw new SandgateError(
        'ERR_QUARANTINE_RELEASE',
        `${target.describe} did not take the message: ${cause instanceof Error ? cause.message : String(cause)}`,
        {
          cause,
          details: {
            id,
            target: target.describe,
            ...(isSandgateError(cause) ? { reason: cause.code, ...cause.details } : {}),
          },
        },
      );
    }
    await this.o.store.markReleased(id, {
      by: options.by,
      to: `${delivery.to} ${delivery.accepted.join(',')}`,
      at,
    });
    if (hashes.length > 0) await this.o.allowList.add(hashes, options.by, { quarantineId: id });
    this.o.log.info(
      {
        event: 'quarantine.released',
        quarantineId: id,
        by: options.by,
        target: target.describe,
        accepted: delivery.accepted.length,
        rejected: delivery.rejected.length,
        allowed: hashes,
      },
      'quarantine item released',
    );
    return { id, delivery, releasedAt: at, allowed: hashes };
  }

  /**
   * SHA-256 of the decoded parts the verdict names (a scanner's `details.part`); when no scanner
   * names a part, every top-level attachment with content.
   */
  async blockingHashes(item: QuarantineItem): Promise<string[]> {
    const named = blockingPartPaths(item);
    const byPath: string[] = [];
    const attachments: string[] = [];
    await walkMessage(this.sourceOf(item), this.walkOptions(), (part) => {
      if (part.sha256 !== '') {
        if (named.has(part.path)) byPath.push(part.sha256);
        else if (part.depth === 0 && part.isAttachment) attachments.push(part.sha256);
      }
      return Promise.resolve();
    });
    return [...new Set(byPath.length > 0 ? byPath : attachments)];
  }

  private sourceOf(item: QuarantineItem): MessageSource {
    return {
      msgId: item.msgId,
      envelope: item.envelope,
      size: item.size,
      open: (range) => {
        if (range !== undefined && (range.start !== undefined || range.end !== undefined)) {
          throw new Error('a quarantined message opens only whole');
        }
        return this.o.store.openOriginal(item);
      },
    };
  }

  private walkOptions() {
    return {
      limits: this.o.walk.limits,
      spoolDir: this.o.walk.spoolDir,
      memoryThreshold: this.o.walk.memoryThreshold,
    };
  }
}

/** Part paths that a malicious or suspicious outcome names in `details.part`. */
function blockingPartPaths(item: QuarantineItem): Set<string> {
  const paths = new Set<string>();
  for (const o of item.outcomes as Array<{ kind?: string; details?: Record<string, unknown> }>) {
    if (o.kind !== 'malicious' && o.kind !== 'suspicious') continue;
    const part = o.details?.part;
    if (typeof part === 'string' && part !== '' && part !== 'raw') paths.add(part);
  }
  return paths;
}
