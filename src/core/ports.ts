import type { Readable } from 'node:stream';
import type { Finding, Outcome } from './outcome.js';
import type { MessageSource } from './message.js';
import type { Decision } from './policy.js';
import type {
  AllowedHash,
  PreparedItem,
  PtClaimResult,
  PtLoadSnapshot,
  PtLoadWindows,
  PtProcessLoad,
  PtTask,
  PtTaskClaim,
  QuarantineFilter,
  QuarantineItem,
  QueueEnvelope,
  QueueItem,
  QueueKind,
  QueueScan,
  QueueStats,
  RecipientState,
} from './state-records.js';

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

/**
 * State ports: what the core, the scanners and the front ends keep across messages, processes and
 * restarts. One host keeps it in SQLite (src/store, openSqliteState); a fleet can share it in a
 * network database behind the same interfaces. The rules for every implementation:
 * - every call returns a promise (the SQLite adapter answers with settled ones);
 * - what must be atomic is one call: a caller never holds a transaction across its own awaits;
 * - a write is visible to every read that starts after the write's promise has resolved, in any
 *   process on the same state; nothing may rely on a write being visible before that;
 * - errors reject the promise (the core decides what a failure means for the message).
 */

/** Verdict cache. Failures and skips are never stored (put ignores them). */
export interface VerdictStore {
  get(key: VerdictKey, now: number): Promise<CachedVerdict | undefined>;
  put(key: VerdictKey, verdict: CachedVerdict, now: number, expiresAt: number): Promise<void>;
  /** Deletes the rows expired at `now`; returns how many. */
  prune(now: number): Promise<number>;
}

/** The last known version of each scanner, shared by every process on the state. */
export interface ScannerVersionRecord {
  readonly version: string;
  /** When a lookup last returned it (epoch ms). */
  readonly checkedAt: number;
}

/** Where ScannerVersions remembers versions across processes and restarts. */
export interface ScannerVersionStore {
  get(scanner: string): Promise<ScannerVersionRecord | undefined>;
  /**
   * Records a successful lookup unless a newer one is stored (by checkedAt); returns the version
   * known before, if any. Reading the old value and writing the new one are one atomic step.
   */
  put(scanner: string, version: string, checkedAt: number): Promise<string | undefined>;
}

/**
 * Cross-process single-flight: a row per content being scanned. The holder refreshes its lease;
 * a lease that runs out (a crashed process) can be taken over.
 */
export interface InflightStore {
  /** Takes the lease when nobody holds it or it ran out at `now`; true when this call took it. */
  tryAcquire(key: VerdictKey, owner: string, now: number, leaseUntil: number): Promise<boolean>;
  /** Extends the lease when `owner` still holds it. */
  refresh(key: VerdictKey, owner: string, leaseUntil: number): Promise<void>;
  /** Gives the lease up when `owner` still holds it. */
  release(key: VerdictKey, owner: string): Promise<void>;
  isHeld(key: VerdictKey, now: number): Promise<boolean>;
  /**
   * Waits for a wake-up about `key`: resolves when its lease may have been released or run out,
   * after `maxWaitMs` at the latest, and at once when `signal` is (or becomes) aborted. A wake-up is
   * a hint, not a promise: the caller re-checks (cache, then tryAcquire) after every return, and
   * passes maxWaitMs <= 5000 so it re-checks at least every 5 s even when a wake-up is lost.
   * SQLite polls isHeld; PostgreSQL listens (LISTEN/NOTIFY on a dedicated connection, release()
   * notifying). Rejects only when the backend fails.
   */
  waitForRelease(
    key: VerdictKey,
    options: { readonly maxWaitMs: number; readonly signal?: AbortSignal },
  ): Promise<void>;
}

/** When a content key first failed to scan: bounds the tempfail window. */
export interface FirstFailureStore {
  /**
   * Records a failure now; returns when the first one was (epoch ms). Clears waiting in this
   * process are written first, so a clear is never overtaken by a later failure of the same key.
   */
  touch(contentKey: string, now: number): Promise<number>;
  /**
   * Forgets the key (a clean verdict, i.e. almost every message). Queued in memory and written in
   * batches, never on the message's path: another process sees it up to the adapter's flush
   * interval late, as if the clean verdict had come that much later.
   */
  clear(contentKey: string): void;
  /** Writes the queued clears now. */
  flush(): Promise<void>;
}

/** PT Sandbox tasks in flight (content key + settings fingerprint -> scan_id), shared by every process. */
export interface PtTaskStore {
  /** The task in flight for this content, if any (a row without a scan_id is still being submitted). */
  get(contentKey: string, fingerprint: string): Promise<PtTask | undefined>;
  /**
   * Claims the right to submit this content, atomically. Returns the existing task instead when
   * one is in flight (or being submitted) and younger than the limits; a stale one, one of
   * another mode, or one created with another token fingerprint (claim.tokenFingerprint; rows
   * without one match any) is taken over. The new claim stores the token fingerprint and the lease.
   */
  claim(contentKey: string, fingerprint: string, claim: PtTaskClaim): Promise<PtClaimResult>;
  /**
   * Adoption of a task whose owner died: makes `owner` the owner of task `scanId` (lease until
   * `leaseUntil`) when the current owner's lease ran out at `now` (lease_until <= now, or none
   * recorded), atomically: of several processes adopting at once exactly one gets true. Also true
   * (and the lease set) when `owner` already owns it: an owner that stops polling a task still
   * running passes leaseUntil = now to give its lease up, so the next process adopts it at once.
   * False when the task is gone, has another scan_id, or its owner's lease is still running.
   */
  adopt(
    contentKey: string,
    fingerprint: string,
    scanId: string,
    owner: string,
    now: number,
    leaseUntil: number,
  ): Promise<boolean>;
  /**
   * The owner's heartbeat: extends to `leaseUntil` the lease of every task (and claim) `owner`
   * holds; returns how many. A task whose lease runs out can be adopted (adopt()) or, without a
   * scan_id, claimed.
   */
  renew(owner: string, leaseUntil: number): Promise<number>;
  /**
   * The distinct token fingerprints of tasks with a scan_id submitted at or after
   * `submittedSince` (epoch ms), and, when `leasedAt` is given, whose owner's lease runs past it
   * (a running process polls them), each with how many tasks carry it; rows without a fingerprint
   * (made before it was recorded) are left out. For the start-up check that every process uses
   * the token that created the tasks it may adopt.
   */
  tokenFingerprints(
    submittedSince: number,
    leasedAt?: number,
  ): Promise<Array<{ tokenFingerprint: string; tasks: number }>>;
  /** Records the scan_id of a task `owner` claimed. */
  setScanId(
    contentKey: string,
    fingerprint: string,
    owner: string,
    scanId: string,
    now: number,
  ): Promise<void>;
  /** Records a poll. */
  touch(contentKey: string, fingerprint: string, now: number): Promise<void>;
  /**
   * Forgets a task that ended (`outcome`: verdict, timeout, lost, failed) and, when this call is
   * the one that removed it (several processes may poll one task), records its submission and end
   * times in the bounded history the load snapshot reads.
   */
  finish(
    contentKey: string,
    fingerprint: string,
    scanId: string,
    finishedAt: number,
    outcome: string,
  ): Promise<void>;
  /** Gives up a claim that never got a scan_id (the upload failed). */
  release(contentKey: string, fingerprint: string, owner: string): Promise<void>;
  /** Forgets one scan (another scan_id under the same key is left alone), without history. */
  remove(contentKey: string, fingerprint: string, scanId: string): Promise<void>;
  /** Deletes tasks submitted before `before` (epoch ms); returns how many. */
  purge(before: number): Promise<number>;
  count(): Promise<number>;
}

/**
 * What the processes (nodes) sharing one state agree on: fingerprints of the secrets every node
 * must share (the X-Sandgate-Mark key, the PT Sandbox token: never the secrets themselves), and
 * job leases so that a cluster-wide job (quarantine retention) runs in one process at a time.
 */
export interface ClusterStore {
  /** The fingerprint stored under `name` ('mark-key', ...), if any. */
  getFingerprint(name: string): Promise<string | undefined>;
  /**
   * Stores `value` under `name` unless a fingerprint is stored there already, atomically; returns
   * the stored one (`value` when this call stored it, or the same value was stored). A caller
   * compares the result with `value`: a different one means another node has another secret.
   */
  claimFingerprint(name: string, value: string, now: number): Promise<string>;
  /** Replaces the fingerprint under `name` (an operator rotating a secret on every node). */
  setFingerprint(name: string, value: string, now: number): Promise<void>;
  /**
   * Takes the lease of job `job` until `until` (epoch ms) when nobody holds it or its lease ran out
   * at `now` (or `owner` holds it); true when this call holds it now. Of several processes trying
   * at once exactly one gets true. A pass that keeps the lease until its next run (not released)
   * makes the job run once per interval for the whole cluster.
   */
  tryJobLease(job: string, owner: string, now: number, until: number): Promise<boolean>;
  /** Gives up the lease of `job` when `owner` holds it (a pass that failed, a stopping process). */
  releaseJobLease(job: string, owner: string): Promise<void>;
}

/** Each process's PT Sandbox window and queue, for `sandgate sandbox health --watch`. */
export interface PtLoadStore {
  /** Replaces this process's row (by owner). */
  report(load: PtProcessLoad): Promise<void>;
  remove(owner: string): Promise<void>;
  /** The load now, with the tasks in flight and the recent history (PtTaskStore.finish). */
  snapshot(now: number, windows?: PtLoadWindows): Promise<PtLoadSnapshot>;
}

/**
 * The operators' allow list of attachment hashes (SHA-256 hex of decoded parts). `revision()`
 * changes whenever the list changes; the rules scanner adds it to its fingerprint, so cached
 * verdicts made under the old list are not reused.
 */
export interface AllowList {
  has(sha256: string): Promise<boolean>;
  revision(): Promise<string>;
  /** Adds hashes, all or none (a bad one throws TypeError); returns those that were new. */
  add(
    hashes: readonly string[],
    by: string,
    options?: { quarantineId?: string; note?: string },
  ): Promise<string[]>;
  remove(sha256: string): Promise<boolean>;
  list(): Promise<AllowedHash[]>;
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

/**
 * The quarantine: the kept messages and their index, for the quarantine service, the admin API and
 * the CLI. put() returns once the item is durable; the index and the bytes never disagree for long
 * (recover() repairs what a crash left half done).
 */
export interface QuarantineStore extends QuarantineWriter {
  /** Items newest first, filtered; `limit` defaults to 100 (at most 10 000). */
  list(filter?: QuarantineFilter): Promise<QuarantineItem[]>;
  /** The item; rejects with ERR_QUARANTINE_NOT_FOUND. */
  get(id: string): Promise<QuarantineItem>;
  count(): Promise<number>;
  /** Total stored (compressed) bytes of every item. */
  totalStoredBytes(): Promise<number>;
  /**
   * A fresh stream over the original message bytes (decompressed). Returned at once; a backend
   * that fetches the bytes does so as the stream is read, and reports a failure as a stream error.
   */
  openOriginal(item: Pick<QuarantineItem, 'id' | 'file'>): Readable;
  /** Removes an item (it disappears from every list at once); rejects with ERR_QUARANTINE_NOT_FOUND. */
  delete(id: string): Promise<QuarantineItem>;
  /** Records who released an item, when and where to. Resolves false when it no longer exists. */
  markReleased(id: string, release: { by: string; to: string; at?: number }): Promise<boolean>;
  /**
   * Retention: removes items older than maxAgeMs, then the oldest until the stored bytes fit in
   * maxTotalBytes. Returns the removed ids, oldest first.
   */
  enforceRetention(limits: { maxAgeMs: number; maxTotalBytes: number }): Promise<string[]>;
  /** Start-up repair after an unclean stop: indexes complete items, removes half-written ones. */
  recover(): Promise<{ indexed: number; removed: number }>;
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

/**
 * The relay's durable queue (queue mode), local to its node like an MTA's queue. prepare() writes
 * the message durably; insert() indexes it, and only then does it count as accepted (the relay
 * answers 250 after it). Per-recipient delivery state is kept, so a restart resumes where the last
 * attempt ended.
 */
export interface RelayQueueStore {
  /** Writes the message durably (not yet accepted: insert() does that); rejects with ERR_SPOOL_WRITE. */
  prepare(
    source: MessageSource,
    envelope: QueueEnvelope,
    options?: { kind?: QueueKind; now?: number },
  ): Promise<PreparedItem>;
  /**
   * Indexes a prepared item, atomically with deleting the item `remove` (a DSN replaces the message
   * it reports on). On failure the prepared message is removed and ERR_SPOOL_WRITE thrown.
   */
  insert(item: PreparedItem, options?: { remove?: string }): Promise<void>;
  get(id: string): Promise<QueueItem | undefined>;
  /** Items in order of their next attempt (the operator's list). */
  list(limit?: number): Promise<QueueItem[]>;
  /**
   * Ids due at `now`, soonest first, skipping `busy`. `unscannedOrBefore` (the next hop is down):
   * only items still to be scanned, or accepted before that time (to expire them).
   */
  due(now: number, limit: number, busy: ReadonlySet<string>, unscannedOrBefore?: number): Promise<string[]>;
  /** The earliest next attempt among items not in `busy` (for the worker's timer). */
  nextDue(busy: ReadonlySet<string>): Promise<number | undefined>;
  /** A message that opens the queued bytes (kept on this node). */
  message(item: QueueItem): MessageSource;
  setScan(id: string, scan: QueueScan): Promise<void>;
  /** Records per-recipient results of one attempt, all or none. */
  record(
    id: string,
    results: ReadonlyArray<{ idx: number; state: RecipientState; reply: string }>,
    now: number,
  ): Promise<void>;
  /** Schedules the next attempt and counts this one. */
  defer(id: string, nextAttemptAt: number, error: string): Promise<void>;
  /** Operator's retry: due now, with the retry delay back at its start. */
  retryNow(id: string, now: number): Promise<boolean>;
  /** Removes an item; resolves false when there was none. */
  remove(id: string): Promise<boolean>;
  stats(): Promise<QueueStats>;
  /** Cheap counters for back-pressure, kept in step by this process (no I/O); see refreshCounters(). */
  readonly load: { readonly messages: number; readonly bytes: number };
  /** Reads the stats and resets the counters to them. */
  refreshCounters(): Promise<QueueStats>;
  /** Start-up repair (before accepting): half-written messages, messages without a row, rows without a message. */
  recover(): Promise<{ removedFiles: number; indexed: string[]; removedRows: string[] }>;
}

/** Every state port of one backend, opened together (SQLite: openSqliteState in src/store). */
export interface StatePorts {
  readonly verdicts: VerdictStore;
  readonly inflight: InflightStore;
  readonly firstFailures: FirstFailureStore;
  readonly scannerVersions: ScannerVersionStore;
  readonly ptTasks: PtTaskStore;
  readonly ptLoad: PtLoadStore;
  readonly cluster: ClusterStore;
  readonly quarantine: QuarantineStore;
  readonly allowList: AllowList;
  readonly relayQueue: RelayQueueStore;
  /** Writes what is batched (first-failure clears), then closes the backend. Idempotent. */
  close(): Promise<void>;
}
