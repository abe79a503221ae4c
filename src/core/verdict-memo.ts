import { isSandgateError, type ErrorCode } from './errors.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { FailureReason, Finding } from './outcome.js';
import type { CachedVerdict, InflightStore, VerdictKey, VerdictStore } from './ports.js';

export interface CacheTtls {
  readonly clean: number;
  readonly suspicious: number;
  readonly malicious: number;
}

export interface MemoRequest {
  readonly key: VerdictKey;
  /** When the caller needs an answer (epoch ms). */
  readonly deadline: number;
  /** How long past the deadline the computation may go on to fill the cache. */
  readonly backgroundMs: number;
  readonly cleanTtlCapMs?: number;
  readonly compute: (signal: AbortSignal) => Promise<Finding>;
  /**
   * The scanner version to store with a finding computed here (asked once the computation ends).
   * Never part of the key: a judged content is not scanned again because a version changed or
   * could not be looked up.
   */
  readonly version?: (signal: AbortSignal) => Promise<string | undefined>;
  /** Called once the underlying work has settled (at once on a cache hit), even after the caller's deadline. */
  readonly whenDone?: () => void;
}

export interface MemoResult {
  readonly finding: Finding;
  /** 'scan': computed here; 'cache': from the verdict cache; 'joined': another caller's identical scan. */
  readonly source: 'scan' | 'cache' | 'joined';
  /** The scanner version that reached the finding (from the cache row on a hit). */
  readonly version?: string;
}

export interface VerdictMemoOptions {
  readonly verdicts: VerdictStore;
  readonly inflight: InflightStore;
  readonly ttl: CacheTtls;
  readonly owner: string;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now?: () => number;
  /** Lease on the in-flight row; refreshed at a third of it. */
  readonly leaseMs?: number;
  /** Aborted when the process shuts down: background scans stop. */
  readonly shutdown?: AbortSignal;
}

/** How often a state failure is logged per operation (every failure is counted). */
const STATE_LOG_EVERY_MS = 10_000;

/** A process waiting for another's identical scan re-checks at least this often, woken or not (ms). */
export const WAIT_RECHECK_MS = 5000;

const FAILURE_BY_CODE: Partial<Record<ErrorCode, FailureReason>> = {
  ERR_SCANNER_TIMEOUT: 'timeout',
  ERR_SCANNER_UNAVAILABLE: 'unavailable',
  ERR_SCANNER_PROTOCOL: 'protocol',
  ERR_SCANNER_TOO_LARGE: 'too-large',
  ERR_SCANNER_ENCRYPTED: 'encrypted',
  ERR_ABORTED: 'timeout',
};

/** Turns anything a scanner threw into a failed finding. Never clean, never malicious. */
export function failureFromError(err: unknown): Finding & { kind: 'failed' } {
  if (isSandgateError(err)) {
    return { kind: 'failed', reason: FAILURE_BY_CODE[err.code] ?? 'internal', message: err.message };
  }
  if (err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError')) {
    return { kind: 'failed', reason: 'timeout', message: 'aborted at the deadline' };
  }
  return { kind: 'failed', reason: 'internal', message: err instanceof Error ? err.message : String(err) };
}

/**
 * Verdict cache plus single-flight, in this process (a shared promise) and across processes
 * (an in-flight row in the state database works as the lock). The caller gets an answer by its
 * deadline; the computation may go on in the background for `backgroundMs` and fill the cache,
 * so the MTA's retry is answered without a new scan.
 */
export class VerdictMemo {
  private readonly running = new Map<string, Promise<MemoResult>>();
  private readonly now: () => number;
  private readonly leaseMs: number;

  constructor(private readonly options: VerdictMemoOptions) {
    this.now = options.now ?? Date.now;
    this.leaseMs = options.leaseMs ?? 30_000;
  }

  /** Waits for every background computation (tests, graceful shutdown). */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  async run(req: MemoRequest): Promise<MemoResult> {
    const { metrics } = this.options;
    const cached = await this.cached(req);
    if (cached !== undefined) {
      metrics.cacheHits.inc({ scanner: req.key.scanner });
      req.whenDone?.();
      return withVersion({ finding: cached.finding, source: 'cache' }, cached.version);
    }
    const id = `${req.key.scanner}\0${req.key.fingerprint}\0${req.key.contentKey}`;
    let shared = this.running.get(id);
    let source: MemoResult['source'] = 'scan';
    if (shared === undefined) {
      shared = this.computeOrWait(req);
      this.running.set(id, shared);
      void shared.finally(() => this.running.delete(id));
    } else {
      metrics.singleFlightJoins.inc({ scanner: req.key.scanner, scope: 'process' });
      source = 'joined';
    }
    if (req.whenDone) void shared.finally(req.whenDone);
    const result = await raceDeadline(shared, req.deadline, this.now);
    return source === 'joined' && result.source === 'scan' ? { ...result, source } : result;
  }

  private async computeOrWait(req: MemoRequest): Promise<MemoResult> {
    const { inflight, owner, metrics } = this.options;
    const giveUpAt = req.deadline + req.backgroundMs;
    let waited = false;
    for (;;) {
      const now = this.now();
      const cached = await this.cached(req);
      if (cached !== undefined) {
        if (waited) metrics.singleFlightJoins.inc({ scanner: req.key.scanner, scope: 'shared' });
        else metrics.cacheHits.inc({ scanner: req.key.scanner });
        return withVersion({ finding: cached.finding, source: waited ? 'joined' : 'cache' }, cached.version);
      }
      let acquired: boolean;
      try {
        acquired = await inflight.tryAcquire(req.key, owner, now, now + this.leaseMs);
      } catch (err) {
        // The state is down or slow: single-flight in this process only (this.running).
        this.stateFailed('lease', err);
        const computed = await this.computeHoldingLease(req, false);
        return withVersion({ finding: computed.finding, source: 'scan' }, computed.version);
      }
      if (acquired) {
        // The holder may have stored its verdict and released between our cache read and the
        // acquire (a slow state widens that window): read once more before scanning again.
        const stored = await this.cached(req);
        if (stored !== undefined) {
          await this.releaseLease(req);
          metrics.singleFlightJoins.inc({ scanner: req.key.scanner, scope: 'shared' });
          return withVersion({ finding: stored.finding, source: 'joined' }, stored.version);
        }
        const computed = await this.computeHoldingLease(req);
        return withVersion({ finding: computed.finding, source: 'scan' }, computed.version);
      }
      if (now >= giveUpAt || this.options.shutdown?.aborted) {
        return {
          finding: {
            kind: 'failed',
            reason: 'timeout',
            message: 'an identical scan in another process did not finish in time',
          },
          source: 'joined',
        };
      }
      waited = true;
      // Woken when the holder releases (or its lease runs out); re-checked after every wake, and
      // at least every WAIT_RECHECK_MS in case a wake-up was lost.
      try {
        await inflight.waitForRelease(req.key, {
          maxWaitMs: Math.max(1, Math.min(WAIT_RECHECK_MS, giveUpAt - now)),
          ...(this.options.shutdown !== undefined ? { signal: this.options.shutdown } : {}),
        });
      } catch (err) {
        this.stateFailed('wait', err);
        const computed = await this.computeHoldingLease(req, false);
        return withVersion({ finding: computed.finding, source: 'scan' }, computed.version);
      }
    }
  }

  /** The cached verdict; a failing cache (the state down or slow) counts as a miss. */
  private async cached(req: MemoRequest): Promise<CachedVerdict | undefined> {
    try {
      return await this.options.verdicts.get(req.key, this.now());
    } catch (err) {
      this.stateFailed('cache_read', err);
      return undefined;
    }
  }

  /** Counts a state failure; logs it at most once per op every STATE_LOG_EVERY_MS (with how many since). */
  private stateFailed(op: 'cache_read' | 'lease' | 'wait', err: unknown): void {
    this.options.metrics.stateFallbacks.inc({ op });
    const now = Date.now();
    const last = this.stateLogged.get(op);
    if (last !== undefined && now - last.at < STATE_LOG_EVERY_MS) {
      last.suppressed++;
      return;
    }
    this.stateLogged.set(op, { at: now, suppressed: 0 });
    this.options.log.warn(
      { event: 'memo.state_fallback', op, suppressed: last?.suppressed ?? 0, err },
      'the state backend failed; scanning without the shared cache or lease',
    );
  }

  private readonly stateLogged = new Map<string, { at: number; suppressed: number }>();

  private async computeHoldingLease(req: MemoRequest, leased = true): Promise<CachedVerdict> {
    const { verdicts, inflight, owner, log } = this.options;
    const heartbeat = setInterval(
      () => {
        if (!leased) return;
        inflight.refresh(req.key, owner, this.now() + this.leaseMs).catch((err: unknown) => {
          log.warn({ event: 'memo.lease_refresh_failed', err }, 'could not refresh the in-flight lease');
        });
      },
      Math.max(10, Math.floor(this.leaseMs / 3)),
    );
    heartbeat.unref();
    const budget = Math.max(0, req.deadline - this.now()) + req.backgroundMs;
    const signals = [AbortSignal.timeout(Math.max(1, budget))];
    if (this.options.shutdown) signals.push(this.options.shutdown);
    const signal = AbortSignal.any(signals);
    let finding: Finding;
    let version: string | undefined;
    try {
      finding = await req.compute(signal);
    } catch (err) {
      finding = failureFromError(err);
    } finally {
      clearInterval(heartbeat);
    }
    try {
      version = await req.version?.(signal);
    } catch {
      version = undefined;
    }
    const verdict: CachedVerdict = version !== undefined ? { finding, version } : { finding };
    try {
      const ttl = this.ttlFor(finding, req.cleanTtlCapMs);
      if (ttl > 0) {
        const now = this.now();
        await verdicts.put(req.key, verdict, now, now + ttl);
      }
    } catch (err) {
      log.error({ event: 'memo.cache_write_failed', err }, 'could not store a verdict in the cache');
    } finally {
      if (leased) await this.releaseLease(req);
    }
    return verdict;
  }

  /** Gives the in-flight lease up; a failure is logged (the lease then runs out by itself). */
  private async releaseLease(req: MemoRequest): Promise<void> {
    try {
      await this.options.inflight.release(req.key, this.options.owner);
    } catch (err) {
      this.options.log.error({ event: 'memo.release_failed', err }, 'could not release the in-flight row');
    }
  }

  private ttlFor(finding: Finding, cleanCap: number | undefined): number {
    const { ttl } = this.options;
    switch (finding.kind) {
      case 'clean':
        return Math.min(ttl.clean, cleanCap ?? Number.POSITIVE_INFINITY);
      case 'suspicious':
        return ttl.suspicious;
      case 'malicious':
        return ttl.malicious;
      case 'skipped':
      case 'failed':
        return 0;
    }
  }
}

async function raceDeadline(
  work: Promise<MemoResult>,
  deadline: number,
  now: () => number,
): Promise<MemoResult> {
  const remaining = deadline - now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<MemoResult>((resolve) => {
    timer = setTimeout(
      () =>
        resolve({
          finding: { kind: 'failed', reason: 'timeout', message: 'no verdict before the message deadline' },
          source: 'scan',
        }),
      Math.max(0, remaining),
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function withVersion(result: MemoResult, version: string | undefined): MemoResult {
  return version !== undefined ? { ...result, version } : result;
}
