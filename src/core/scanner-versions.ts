import { isSandgateError } from './errors.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { ScannerVersionStore } from './ports.js';
import type { Scanner } from './scanner.js';

export interface ScannerVersionsOptions {
  /** The last known versions, shared by every process on the state database (src/store). */
  readonly store: ScannerVersionStore;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now?: () => number;
  /** A known version is looked up again when it is this old (ms). Default 10 minutes. */
  readonly ttlMs?: number;
  /** After a failed lookup, the next one waits this long (ms). Default 1 minute. */
  readonly retryMs?: number;
  /** One lookup's budget (ms). Default 5 s. */
  readonly lookupTimeoutMs?: number;
  /**
   * When no version is known at all (a new installation), how long a verdict waits for the first
   * lookup before it is stored without one (ms). Default 2 s. Never waited for otherwise.
   */
  readonly firstWaitMs?: number;
  /** Aborted when the process shuts down: a lookup still running stops (the known value stays). */
  readonly shutdown?: AbortSignal;
}

interface Entry {
  value: string | undefined;
  /** When a lookup (here or in another process) last returned `value`; -Infinity: never. */
  checkedAt: number;
  /** No lookup before this time (after a failure). */
  nextTryAt: number;
  /** The refresh running now: the stored version read, then (when that is stale) a lookup. */
  lookup: Promise<void> | undefined;
  /** Settles once the running refresh has read the stored version. */
  stored: Promise<void>;
}

const MAX_VERSION_LENGTH = 200;

/**
 * The version of each scanner that has one (Scanner.version: PT Sandbox getVersion, clamd's
 * VERSION, an ICAP ISTag), kept out of the verdict cache key and stored with each verdict instead.
 *
 * - Looked up once at a time per process (single-flight: 200 messages at once make one lookup),
 *   again when the known value is older than the TTL, and never on a message's path: a scan goes
 *   on with the known value while a lookup runs in the background.
 * - Remembered in the state (ScannerVersionStore), so another process or a restart starts with it
 *   and skips the lookup while it is fresh: each refresh reads the stored version first. Never
 *   `unknown` while a value is known: a failed lookup keeps the last value, is logged
 *   (`scanner.version_failed`) and counted, and is retried after `retryMs`.
 */
export class ScannerVersions {
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;
  private readonly ttlMs: number;
  private readonly retryMs: number;
  private readonly lookupTimeoutMs: number;
  private readonly firstWaitMs: number;

  constructor(private readonly o: ScannerVersionsOptions) {
    this.now = o.now ?? Date.now;
    this.ttlMs = o.ttlMs ?? 10 * 60_000;
    this.retryMs = o.retryMs ?? 60_000;
    this.lookupTimeoutMs = o.lookupTimeoutMs ?? 5_000;
    this.firstWaitMs = o.firstWaitMs ?? 2_000;
  }

  /** The version known now in this process (looked up here, or read from the state), without waiting. */
  known(name: string): string | undefined {
    return this.entry(name).value;
  }

  /**
   * Starts a refresh in the background when the known version is stale (or unknown): the stored
   * version is read first (another process may have looked it up meanwhile), and the scanner is
   * asked only when that is stale too. Never waits.
   */
  refresh(scanner: Scanner): void {
    if (scanner.version === undefined) return;
    const e = this.entry(scanner.name);
    const now = this.now();
    if (e.lookup !== undefined || now - e.checkedAt < this.ttlMs || now < e.nextTryAt) return;
    let stored!: () => void;
    e.stored = new Promise((resolve) => (stored = resolve));
    const lookup = this.refreshEntry(scanner, e, now, stored);
    e.lookup = lookup;
    void lookup.finally(() => {
      stored();
      if (e.lookup === lookup) e.lookup = undefined;
    });
  }

  /**
   * The version to store with a verdict reached now: the known one at once. When none is known in
   * this process it waits for the stored one, and only when none is stored anywhere for the first
   * lookup; both up to `firstWaitMs` or `signal`.
   */
  async current(scanner: Scanner, signal?: AbortSignal): Promise<string | undefined> {
    if (scanner.version === undefined) return undefined;
    this.refresh(scanner);
    const e = this.entry(scanner.name);
    if (e.value !== undefined || e.lookup === undefined) return e.value;
    const lookup = e.lookup;
    await waitBounded(
      e.stored.then(() => (e.value !== undefined ? undefined : lookup)),
      this.firstWaitMs,
      signal,
    );
    return e.value;
  }

  /** Waits for the refreshes running now (tests, shutdown). */
  async settle(): Promise<void> {
    const running: Promise<void>[] = [];
    for (const e of this.entries.values()) if (e.lookup !== undefined) running.push(e.lookup);
    await Promise.allSettled(running);
  }

  private entry(name: string): Entry {
    let e = this.entries.get(name);
    if (e === undefined) {
      e = {
        value: undefined,
        checkedAt: Number.NEGATIVE_INFINITY,
        nextTryAt: Number.NEGATIVE_INFINITY,
        lookup: undefined,
        stored: Promise.resolve(),
      };
      this.entries.set(name, e);
    }
    return e;
  }

  private async refreshEntry(scanner: Scanner, e: Entry, now: number, stored: () => void): Promise<void> {
    const row = await this.read(scanner.name);
    if (row !== undefined && row.checkedAt > e.checkedAt)
      this.adopt(scanner.name, e, row.version, row.checkedAt);
    stored();
    if (now - e.checkedAt < this.ttlMs) return;
    await this.lookup(scanner, e);
  }

  private adopt(name: string, e: Entry, version: string, checkedAt: number): void {
    if (e.value !== version) this.setInfo(name, e.value, version);
    e.value = version;
    e.checkedAt = checkedAt;
  }

  private async read(name: string): Promise<{ version: string; checkedAt: number } | undefined> {
    try {
      return await this.o.store.get(name);
    } catch (err) {
      this.o.log.warn(
        { event: 'scanner.version_store_failed', scanner: name, err },
        'cannot read the last known scanner version from the state database',
      );
      return undefined;
    }
  }

  private async lookup(scanner: Scanner, e: Entry): Promise<void> {
    const { metrics, log, store } = this.o;
    const name = scanner.name;
    const started = this.now();
    let version: string;
    try {
      const timeout = AbortSignal.timeout(this.lookupTimeoutMs);
      const signal = this.o.shutdown !== undefined ? AbortSignal.any([timeout, this.o.shutdown]) : timeout;
      const raw = await raceAbort(
        (scanner.version as (signal: AbortSignal) => Promise<string>)(signal),
        signal,
      );
      version = printable(raw);
      if (version === '') throw new Error('the scanner reported an empty version');
    } catch (err) {
      e.nextTryAt = this.now() + this.retryMs;
      // Stopped because the process is shutting down: not a failure of the scanner.
      if (this.o.shutdown?.aborted === true) return;
      metrics.scannerVersionLookups.inc({ scanner: name, result: 'failed' });
      log.warn(
        {
          event: 'scanner.version_failed',
          scanner: name,
          code: isSandgateError(err) ? err.code : 'error',
          known: e.value ?? null,
          retryInMs: this.retryMs,
        },
        e.value !== undefined
          ? 'cannot look up the scanner version; keeping the last known one'
          : 'cannot look up the scanner version; verdicts are stored without one until it is known',
      );
      return;
    }
    metrics.scannerVersionLookups.inc({ scanner: name, result: 'ok' });
    const before = e.value;
    this.adopt(name, e, version, started);
    let stored: string | undefined;
    try {
      stored = await store.put(name, version, started);
    } catch (err) {
      log.warn(
        { event: 'scanner.version_store_failed', scanner: name, err },
        'cannot remember the scanner version in the state database',
      );
    }
    const from = stored ?? before;
    if (from !== undefined && from !== version) {
      log.info(
        { event: 'scanner.version_changed', scanner: name, from, to: version },
        'scanner version changed (new verdicts carry the new version; cached ones keep theirs)',
      );
    }
  }

  private setInfo(name: string, from: string | undefined, to: string): void {
    const gauge = this.o.metrics.scannerVersion;
    if (from !== undefined) gauge.remove({ scanner: name, version: from });
    gauge.set({ scanner: name, version: to }, 1);
  }
}

/** One line of printable ASCII, bounded: a version goes into logs, metrics labels and the quarantine. */
function printable(text: string): string {
  return text
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, MAX_VERSION_LENGTH);
}

/** Rejects when `signal` aborts, whether or not the scanner's version() honours it. */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function waitBounded(work: Promise<void>, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    void work.then(done, done);
  });
}
