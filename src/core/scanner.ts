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
  /**
   * The scan service's CPU slots (`scan.concurrency`). A local scanner runs holding one; a remote
   * scanner (clamd, PT Sandbox) holds none while it waits for its peer and takes one here for its
   * own CPU phases (a MIME walk, hashing), so messages waiting on a sandbox never keep a local
   * scan from running. Absent: no limit (the caller holds a slot already, or a test drives the
   * scanner directly); use `cpuOf(ctx)`.
   */
  readonly cpu?: CpuSlots;
  readonly now: () => number;
}

/** Memoises a scanner's verdict on a piece of content, across messages and processes. */
export interface PartMemo {
  run(contentKey: string, compute: () => Promise<Finding>): Promise<Finding>;
}

/** The local CPU slots a scanner takes for its CPU-bound phases. */
export interface CpuSlots {
  /**
   * Runs `fn` holding one slot; waits for a free slot in order first. Rejects (with the signal's
   * reason) when ctx.signal aborts while waiting. Inside a slot, never wait for another one.
   */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Takes a slot and resolves with its release function (for a phase that ends inside a callback). */
  acquire(): Promise<() => void>;
}

export interface Scanner {
  /** Name used in config, logs, headers and metrics: 'rules', 'clamd', 'pt-sandbox'. */
  readonly name: string;
  /**
   * Identity and the settings that change what this scanner would say (granularity, options,
   * rule lists). Part of every cache key. Not the engine's or appliance's version: that is
   * `version()`, stored with each verdict, so that a version lookup that fails or changes never
   * makes a judged message be scanned again (staleness is bounded by `cleanTtlCapMs`).
   */
  fingerprint(signal: AbortSignal): Promise<string>;
  /**
   * The engine, database or appliance version (clamd's VERSION answer, PT Sandbox getVersion, an
   * ICAP service's ISTag). Optional; informational. Called by the core's ScannerVersions at most
   * once at a time per process and every few minutes, never on a message's path.
   */
  version?(signal: AbortSignal): Promise<string>;
  /**
   * How long (ms) a scan may keep running after the caller's deadline has passed, so that its
   * verdict fills the cache for the retry. 0: stop at the deadline.
   */
  readonly backgroundMs: number;
  /**
   * A scanner that answers from local CPU in well under a millisecond (the rules engine): the core
   * runs it directly, holding a CPU slot, without the verdict cache or the cross-process lock,
   * which would cost more than the scan.
   */
  readonly local?: boolean;
  /** Upper bound on cached clean verdicts for this scanner (ms), on top of the cache's own TTL. */
  readonly cleanTtlCapMs?: number;
  /** Returns a Finding; a thrown error is turned into failed(internal) or the SandgateError's reason. */
  scan(message: MessageSource, ctx: ScanContext): Promise<Finding>;
  /**
   * Checks made once at start, before the first scan, against the shared state (PT Sandbox: the
   * token of the tasks in flight). A rejection stops the process from starting.
   */
  start?(): Promise<void>;
  close?(): Promise<void>;
}

const NO_LIMIT: CpuSlots = {
  acquire: () => Promise.resolve(() => undefined),
  run: (fn) => fn(),
};

/** ctx.cpu, or slots without a limit when the caller gave none. */
export function cpuOf(ctx: ScanContext): CpuSlots {
  return ctx.cpu ?? NO_LIMIT;
}
