import type { Envelope } from './message.js';

/**
 * The records the state ports (./ports.ts) carry: PT Sandbox tasks and load, quarantine items,
 * relay queue items. Plain data, the same whatever backend keeps them.
 */

// ---- PT Sandbox tasks and load ----------------------------------------------------------------

/** A PT Sandbox task in flight, shared by every sandgate process on the same state. */
export interface PtTask {
  readonly contentKey: string;
  readonly fingerprint: string;
  /** Undefined while the owner is still uploading and creating the task. */
  readonly scanId: string | undefined;
  /** 'analysis' (/analysis/checkTask) or 'source' (/scan/getStatus): the endpoint family that polls it. */
  readonly mode: string;
  readonly owner: string;
  readonly submittedAt: number;
  readonly lastPolledAt: number | undefined;
  /** Fingerprint of the API token that created it (secretFingerprint()); undefined for older rows. */
  readonly tokenFingerprint: string | undefined;
  /** Until when its owner holds it (renewed by the owner's heartbeat); undefined for older rows (adoptable). */
  readonly leaseUntil: number | undefined;
}

/** What a process asks for when it claims the right to submit a content. */
export interface PtTaskClaim {
  readonly mode: string;
  readonly owner: string;
  readonly now: number;
  /** A task older than this (ms) is stale and taken over. */
  readonly maxTaskAgeMs: number;
  /** A claim without a scan_id older than this (ms) is stale (its owner died while uploading). */
  readonly claimTimeoutMs: number;
  /**
   * Fingerprint of the API token this process uses: stored with the task. A task of another token
   * cannot be read with ours (the appliance binds reports to the token), so it is stale for us.
   */
  readonly tokenFingerprint: string;
  /** The owner's lease on the new claim (renewed by PtTaskStore.renew). */
  readonly leaseUntil: number;
}

export type PtClaimResult = { readonly claimed: true } | { readonly claimed: false; readonly task: PtTask };

/** One process's PT Sandbox window and queue, as it last reported them. */
export interface PtProcessLoad {
  readonly owner: string;
  readonly frontEnd: string;
  /** Tasks it submitted and is polling. */
  readonly inflight: number;
  /** Submissions waiting in it for a window slot. */
  readonly waiting: number;
  readonly windowLimit: number;
  readonly windowMax: number;
  /** Tasks it created since it started. */
  readonly submittedTotal: number;
  /** Submissions the appliance refused (429/503) since it started. */
  readonly refusedTotal: number;
  readonly startedAt: number;
  readonly updatedAt: number;
}

/** What `sandgate sandbox health --watch` shows: the PT Sandbox load of every process on the state. */
export interface PtLoadSnapshot {
  readonly at: number;
  /** Processes that reported within `aliveMs`. */
  readonly processes: readonly PtProcessLoad[];
  /** Tasks with a scan_id: tasks at the appliance (every process). */
  readonly tasksInFlight: number;
  /** Tasks without one: submissions being uploaded. */
  readonly claims: number;
  /** Age of the oldest task in flight (ms), if any. */
  readonly oldestInFlightMs: number | undefined;
  /** Tasks submitted within the last `rateWindowMs` (in flight or finished). */
  readonly submittedRecent: number;
  /** Tasks finished within the last `rateWindowMs`. */
  readonly finishedRecent: number;
  /** Ages (ms) of tasks that ended with a verdict within the last `ageWindowMs`, sorted. */
  readonly finishedAges: readonly number[];
  /** The same within the last `rateWindowMs`: the age now, against the usual one above. */
  readonly recentAges: readonly number[];
  readonly rateWindowMs: number;
  readonly ageWindowMs: number;
}

export interface PtLoadWindows {
  /** Default 30 s. */
  readonly aliveMs?: number;
  /** Default 60 s. */
  readonly rateWindowMs?: number;
  /** Default, and at most, the history the backend keeps (15 minutes). */
  readonly ageWindowMs?: number;
}

// ---- Quarantine ---------------------------------------------------------------------------------

/** What the sidecar JSON beside each item holds; the index row can always be rebuilt from it. */
export interface QuarantineRecord {
  readonly id: string;
  readonly msgId: string;
  readonly createdAt: number;
  readonly envelope: Envelope;
  readonly subject?: string;
  readonly verdict: string;
  readonly action: string;
  readonly reason: string;
  readonly threats: readonly string[];
  readonly outcomes: readonly unknown[];
  readonly contentKey: string;
  readonly size: number;
  readonly storedSize: number;
  /** Where the compressed message is, relative to the quarantine (for the SQLite adapter, a file name). */
  readonly file: string;
}

/** An indexed item as operators see it. */
export interface QuarantineItem extends QuarantineRecord {
  /** The Subject decoded for display (RFC 2047 words, 8-bit UTF-8); `subject` is the raw value. */
  readonly subjectText?: string;
  readonly releasedAt?: number;
  readonly releasedBy?: string;
  readonly releasedTo?: string;
}

export interface QuarantineFilter {
  /** Epoch ms: items created at or after. */
  readonly since?: number;
  readonly before?: number;
  readonly verdict?: string;
  /** Substring of the envelope sender (case-insensitive). */
  readonly sender?: string;
  /** Substring of any envelope recipient (case-insensitive). */
  readonly recipient?: string;
  /** Substring of the decoded subject (case-insensitive in every script; ё matches е). */
  readonly subject?: string;
  readonly released?: boolean;
  readonly limit?: number;
}

/** An allow-listed attachment hash (SHA-256 hex of a decoded part). */
export interface AllowedHash {
  readonly sha256: string;
  readonly addedAt: number;
  readonly addedBy: string;
  readonly quarantineId?: string;
  readonly note?: string;
}

// ---- Relay queue (queue mode) -------------------------------------------------------------------

/** MAIL FROM / RCPT TO parameters kept with a queued message (keys upper case). */
export type QueueParams = Readonly<Record<string, string | true>>;

export type QueueKind = 'message' | 'dsn';
export type RecipientState = 'pending' | 'delivered' | 'failed';

export interface QueueRecipient {
  readonly idx: number;
  readonly address: string;
  readonly params: QueueParams;
  readonly state: RecipientState;
  /** The next hop's last reply for this recipient ("550 5.1.1 text"), or our own reason. */
  readonly reply?: string;
}

/** What the worker needs to deliver a message that passed the scan: the headers the core asked for. */
export interface QueueScan {
  readonly headers: ReadonlyArray<{ readonly name: string; readonly value: string }>;
  readonly stripHeaders: readonly string[];
  readonly verdict: string;
  readonly reason: string;
}

/** The envelope as received, kept with the queued message and in its index row. */
export interface QueueEnvelope {
  readonly sender: string;
  readonly mailParams: QueueParams;
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly params: QueueParams }>;
  readonly clientAddress?: string;
  readonly heloName?: string;
  /** XFORWARD attributes to pass on (NAME, ADDR, ...). */
  readonly xforward: Readonly<Record<string, string>>;
}

/** A message written durably but not yet indexed: the next step is insert(). */
export interface PreparedItem {
  readonly id: string;
  readonly kind: QueueKind;
  readonly createdAt: number;
  readonly envelope: QueueEnvelope;
  readonly size: number;
  readonly file: string;
  readonly dataOffset: number;
}

/** An indexed item: the prepared message plus its scan, retry state and recipients. */
export interface QueueItem extends PreparedItem {
  readonly scan?: QueueScan;
  readonly attempts: number;
  readonly nextAttemptAt: number;
  readonly lastError?: string;
  readonly recipients: readonly QueueRecipient[];
}

export interface QueueStats {
  readonly messages: number;
  readonly bytes: number;
  /** created_at of the oldest item (epoch ms), undefined when empty. */
  readonly oldest?: number;
}
