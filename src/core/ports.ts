import type { Finding, Outcome } from './outcome.js';
import type { MessageSource } from './message.js';
import type { Decision } from './policy.js';

/** Identifies one scanner's view of one piece of content. */
export interface VerdictKey {
  readonly scanner: string;
  readonly fingerprint: string;
  readonly contentKey: string;
}

/** Verdict cache. Failures are never stored. Synchronous: the SQLite store answers in microseconds. */
export interface VerdictStore {
  get(key: VerdictKey, now: number): Finding | undefined;
  put(key: VerdictKey, finding: Finding, now: number, expiresAt: number): void;
}

/**
 * Cross-process single-flight: a row per content being scanned. The holder refreshes its lease;
 * a lease that runs out (a crashed process) can be taken over.
 */
export interface InflightStore {
  tryAcquire(key: VerdictKey, owner: string, now: number, leaseUntil: number): boolean;
  refresh(key: VerdictKey, owner: string, leaseUntil: number): void;
  release(key: VerdictKey, owner: string): void;
  isHeld(key: VerdictKey, now: number): boolean;
}

/** When a content key first failed to scan: bounds the tempfail window. */
export interface FirstFailureStore {
  /** Records a failure now; returns when the first one was (epoch ms). */
  touch(contentKey: string, now: number): number;
  clear(contentKey: string): void;
}

export interface QuarantineEntry {
  readonly message: MessageSource;
  readonly contentKey: string;
  readonly decision: Decision;
  readonly outcomes: readonly Outcome[];
  readonly subject?: string;
}

/** Writes an item durably (bytes, then the index row) and returns its id; throws when it cannot. */
export interface QuarantineWriter {
  put(entry: QuarantineEntry): Promise<string>;
}

/** Decides whether a message skips scanning; returns the list that matched ('client', 'sender', 'recipient'). */
export type BypassMatcher = (envelope: MessageSource['envelope']) => string | undefined;
