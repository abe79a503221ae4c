import type { MessageSource } from './message.js';
import type { Finding } from './outcome.js';
import type { Logger } from './logger.js';

/** What the orchestrator hands a scanner for one call. */
export interface ScanContext {
  /**
   * Aborted when the scanner must stop: the message deadline, or the background limit. A local
   * scanner's fires up to DEADLINE_SLOT_MS after the deadline (it is shared: see DeadlineSignals).
   */
  readonly signal: AbortSignal;
  /** Epoch ms by which the caller needs an answer. Scanners pass the remaining budget on to their peers. */
  readonly deadline: number;
  readonly log: Logger;
  /** Cache and single-flight for sub-parts (attachments mode): the same part is analysed once. */
  readonly memo: PartMemo;
  readonly now: () => number;
}

/** Memoises a scanner's verdict on a piece of content, across messages and processes. */
export interface PartMemo {
  run(contentKey: string, compute: () => Promise<Finding>): Promise<Finding>;
}

export interface Scanner {
  /** Name used in config, logs, headers and metrics: 'rules', 'clamd', 'pt-sandbox'. */
  readonly name: string;
  /**
   * Identity and settings that change what this scanner would say (engine and database version,
   * options). Part of every cache key, so new signatures invalidate cached verdicts.
   */
  fingerprint(signal: AbortSignal): Promise<string>;
  /**
   * The engine or database version behind the scanner (an ICAP service's ISTag), for scanners
   * whose version is kept out of the fingerprint: stored with each verdict instead, so new
   * signatures do not empty the cache and the clean-verdict TTL cap bounds staleness. Throws when
   * the version cannot be read (the last known value then stands).
   */
  version?(signal: AbortSignal): Promise<string>;
  /**
   * How long (ms) a scan may keep running after the caller's deadline has passed, so that its
   * verdict fills the cache for the retry. 0: stop at the deadline.
   */
  readonly backgroundMs: number;
  /**
   * A scanner that answers from local CPU in well under a millisecond (the rules engine): the core
   * runs it directly, without the verdict cache or the cross-process lock, which would cost more
   * than the scan.
   */
  readonly local?: boolean;
  /** Upper bound on cached clean verdicts for this scanner (ms), on top of the cache's own TTL. */
  readonly cleanTtlCapMs?: number;
  /** Returns a Finding; a thrown error is turned into failed(internal) or the SandgateError's reason. */
  scan(message: MessageSource, ctx: ScanContext): Promise<Finding>;
  close?(): Promise<void>;
}
