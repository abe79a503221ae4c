import type { Finding, Outcome } from './outcome.js';
import type { MessageSource } from './message.js';
import type { Decision } from './policy.js';

/** Identifies one scanner's view of one piece of content. */
export interface VerdictKey {
  readonly scanner: string;
  readonly fingerprint: string;
  readonly contentKey: string;
}

/** A cached verdict and the scanner version that reached it (when known). */
export interface CachedVerdict {
  readonly finding: Finding;
  readonly version?: string;
}

/** Verdict cache. Failures are never stored. Synchronous: the SQLite store answers in microseconds. */
export interface VerdictStore {
  get(key: VerdictKey, now: number): CachedVerdict | undefined;
  put(key: VerdictKey, verdict: CachedVerdict, now: number, expiresAt: number): void;
}

/** The last known version of each scanner, shared by every process on the state database. */
export interface ScannerVersionRecord {
  readonly version: string;
  /** When a lookup last returned it (epoch ms). */
  readonly checkedAt: number;
}

/** Where ScannerVersions remembers versions across processes and restarts. Synchronous, like the verdict store. */
export interface ScannerVersionStore {
  get(scanner: string): ScannerVersionRecord | undefined;
  /** Records a successful lookup; returns the version known before, if any. */
  put(scanner: string, version: string, checkedAt: number): string | undefined;
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

/** A message to hand on outside a client's session: a quarantine release, an administrator notice. */
export interface DeliveryRequest {
  /** '' for the null sender. */
  readonly sender: string;
  readonly recipients: readonly string[];
  /** Our id for the message (file names of directory targets, logs). */
  readonly msgId: string;
  /** The message bytes, from the start each time it is called; line ends are normalised on the way. */
  readonly message: () => AsyncIterable<Buffer>;
  readonly signal?: AbortSignal;
}

export interface DeliveryReceipt {
  /** Where it went: smtp://host:port, or the file written. */
  readonly to: string;
  readonly accepted: readonly string[];
  readonly rejected: readonly string[];
  /** The target's answer to the message (SMTP reply text, or "written <file>"). */
  readonly response: string;
}

/**
 * Hands a message on to one configured target with the relay's own delivery code (SMTP/LMTP
 * client with its TLS policy, directory, CommuniGate Submitted directory). Throws when no
 * recipient was accepted or the message was refused; the error says what the target answered.
 */
export interface MailDelivery {
  readonly describe: string;
  deliver(request: DeliveryRequest): Promise<DeliveryReceipt>;
}
