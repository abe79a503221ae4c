import { SandgateError } from '../core/errors.js';
import { PartSpool } from './part-spool.js';
import type { AnomalyKind, EmbeddedKind, OnPart, WalkAnomaly, WalkLimitKind, WalkOptions } from './types.js';

const DEFAULT_MEMORY_THRESHOLD = 1024 * 1024;

/** Anomalies kept per walk: the first ones name the problem; a flood of them says nothing more. */
export const MAX_ANOMALIES = 32;

/** Thrown inside the walk when a limit is reached; turned into WalkSummary.limit. */
export class LimitReached extends Error {
  constructor(
    readonly kind: WalkLimitKind,
    readonly at: string,
  ) {
    super(`walk limit ${kind} reached at ${at}`);
  }
}

/** Thrown inside the walk when onPart returned 'stop'. */
export class StopWalk extends Error {}

/**
 * Thrown inside the walk when the caller's onPart threw: its error (a state lookup that failed, a
 * scanner's own failure) is the caller's, not a sign of unparseable MIME, and walkMessage rethrows
 * it as it was thrown.
 */
export class PartHandlerFailed extends Error {
  constructor(readonly error: unknown) {
    super('the part handler failed', { cause: error });
  }
}

export interface PartMeta {
  readonly path: string;
  readonly depth: number;
  readonly contentType: string;
  readonly filename?: string;
  readonly otherNames?: readonly string[];
  readonly isAttachment: boolean;
  readonly embedded?: EmbeddedKind;
  /** The lower-case Content-Transfer-Encoding of a MIME leaf ('' when none). */
  readonly encoding?: string;
}

export class WalkState {
  parts = 0;
  members = 0;
  bytes = 0;
  unreadableArchives = 0;
  readonly anomalies: WalkAnomaly[] = [];
  readonly threshold: number;
  constructor(
    readonly options: WalkOptions,
    private readonly handler: OnPart,
  ) {
    this.threshold = options.memoryThreshold ?? DEFAULT_MEMORY_THRESHOLD;
  }

  /** Hands a part to the caller's onPart; what it throws comes out as PartHandlerFailed. */
  async onPart(part: Parameters<OnPart>[0]): Promise<Awaited<ReturnType<OnPart>>> {
    try {
      return await this.handler(part);
    } catch (err) {
      throw new PartHandlerFailed(err);
    }
  }

  checkAborted(): void {
    if (this.options.signal?.aborted) {
      throw new SandgateError('ERR_ABORTED', 'the MIME walk was aborted', {
        cause: this.options.signal.reason,
      });
    }
  }

  /** Records an ambiguity; the same kind at the same path once. */
  flag(kind: AnomalyKind, at: string): void {
    if (this.anomalies.length >= MAX_ANOMALIES) return;
    if (this.anomalies.some((a) => a.kind === kind && a.at === at)) return;
    this.anomalies.push({ kind, at });
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
