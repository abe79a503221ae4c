import type { DeadlineSignals } from './deadline-signals.js';
import type { EvaluateOptions } from './evaluation.js';
import { lazyChild, type Logger } from './logger.js';
import type { MessageSource } from './message.js';
import { describeFinding, type Finding, type Outcome } from './outcome.js';
import type { Scanner, ScanContext } from './scanner.js';
import type { ScannerVersions } from './scanner-versions.js';
import { cpuSlotsOf, type Semaphore } from './semaphore.js';
import { failureFromError, type MemoResult, type VerdictMemo } from './verdict-memo.js';

/** What one scanner's run takes from the scan service. */
export interface RunScannerDeps {
  readonly memo: VerdictMemo;
  readonly now: () => number;
  /** The deadline signals local scanners are stopped by (shared per slot: see DeadlineSignals). */
  readonly deadlines: DeadlineSignals;
  /** The CPU slots (scan.concurrency): held by local scanners, taken by remote ones through ctx.cpu. */
  readonly cpu: Semaphore;
  /** Scanner versions, stored with each verdict (never in the key). */
  readonly versions?: ScannerVersions;
}

/**
 * Runs one scanner of the chain within the message's deadline: local scanners directly, holding a
 * CPU slot; the others through the verdict memo (cache and single-flight by scanner, fingerprint
 * and content key) without one, taking a slot only for their CPU phases (ctx.cpu).
 */
export async function runScanner(
  scanner: Scanner,
  message: MessageSource,
  contentKey: string,
  options: EvaluateOptions,
  parentLog: Logger,
  service: RunScannerDeps,
): Promise<Outcome> {
  const log = lazyChild(parentLog, { scanner: scanner.name });
  const started = service.now();
  const done = (finding: Finding, cached: boolean, version?: string): Outcome => {
    const outcome: Outcome = {
      ...finding,
      scanner: scanner.name,
      cached,
      ms: service.now() - started,
      ...(version !== undefined ? { version } : {}),
    };
    if (log.isLevelEnabled?.('debug') !== false) {
      log.debug(
        { event: 'scan.scanner_done', outcome: describeFinding(finding), cached, ms: outcome.ms },
        'scanner done',
      );
    }
    return outcome;
  };
  const deadline = options.deadline;
  if (service.now() >= deadline) {
    return done({ kind: 'failed', reason: 'timeout', message: 'no budget left for this scanner' }, false);
  }
  if (scanner.local) return runLocal(scanner, message, options, log, service, done);
  service.versions?.refresh(scanner);
  let fingerprint: string;
  try {
    const budget = Math.max(1, Math.min(deadline - service.now(), 10_000));
    fingerprint = await scanner.fingerprint(AbortSignal.timeout(budget));
  } catch (err) {
    return done(failureFromError(err), false);
  }
  // The front end may dispose of its spool as soon as it has an answer; work still running keeps the bytes.
  const releaseBytes = message.retain?.();
  const result = scanThroughMemo(service.memo, scanner, message, {
    fingerprint,
    contentKey,
    deadline,
    log,
    now: service.now,
    cpu: service.cpu,
    ...(service.versions !== undefined ? { versions: service.versions } : {}),
    ...(releaseBytes !== undefined ? { whenDone: releaseBytes } : {}),
  });
  const { finding, source, version } = await result;
  return done(finding, source !== 'scan', version);
}

/** A local scanner: cheaper to recompute than to cache or lock; run directly holding a CPU slot. */
async function runLocal(
  scanner: Scanner,
  message: MessageSource,
  options: EvaluateOptions,
  log: Logger,
  service: RunScannerDeps,
  done: (finding: Finding, cached: boolean) => Outcome,
): Promise<Outcome> {
  const deadline = options.deadline;
  let release = options.signal?.aborted === true ? undefined : service.cpu.tryAcquire();
  try {
    // Only a caller that has to wait for a slot needs a signal for it.
    release ??= await service.cpu.acquire(options.signal ?? service.deadlines.at(deadline));
  } catch {
    return done(
      { kind: 'failed', reason: 'timeout', message: 'waited for a scan slot until the deadline' },
      false,
    );
  }
  const ctx: ScanContext = {
    signal: service.deadlines.at(deadline),
    deadline,
    log,
    now: service.now,
    // It holds a slot already: ctx.cpu absent, no second one.
    memo: { run: (_partKey, compute) => compute() },
  };
  try {
    return done(await scanner.scan(message, ctx), false);
  } catch (err) {
    return done(failureFromError(err), false);
  } finally {
    release();
  }
}

/**
 * One scan through the verdict memo (cache and single-flight by scanner, fingerprint and content
 * key), with the scanner's own sub-parts memoised under `part:<key>` (attachments mode). The
 * scanner's version (when `versions` is given) is stored with each verdict.
 */
export function scanThroughMemo(
  memo: VerdictMemo,
  scanner: Scanner,
  message: MessageSource,
  o: {
    readonly fingerprint: string;
    readonly contentKey: string;
    readonly deadline: number;
    readonly log: Logger;
    readonly now: () => number;
    /** CPU slots for ctx.cpu; without them, CPU phases are not limited (tests). */
    readonly cpu?: Semaphore;
    readonly versions?: ScannerVersions;
    readonly whenDone?: () => void;
  },
): Promise<MemoResult> {
  const { fingerprint, deadline, versions } = o;
  const version =
    versions !== undefined && scanner.version !== undefined
      ? (signal: AbortSignal) => versions.current(scanner, signal)
      : undefined;
  return memo.run({
    key: { scanner: scanner.name, fingerprint, contentKey: o.contentKey },
    deadline,
    backgroundMs: scanner.backgroundMs,
    ...(scanner.cleanTtlCapMs !== undefined ? { cleanTtlCapMs: scanner.cleanTtlCapMs } : {}),
    ...(version !== undefined ? { version } : {}),
    ...(o.whenDone !== undefined ? { whenDone: o.whenDone } : {}),
    compute: async (signal) => {
      const ctx: ScanContext = {
        signal,
        deadline,
        log: o.log,
        now: o.now,
        ...(o.cpu !== undefined ? { cpu: cpuSlotsOf(o.cpu, signal) } : {}),
        memo: {
          run: async (partKey, compute) =>
            (
              await memo.run({
                key: { scanner: scanner.name, fingerprint, contentKey: `part:${partKey}` },
                deadline,
                backgroundMs: scanner.backgroundMs,
                ...(scanner.cleanTtlCapMs !== undefined ? { cleanTtlCapMs: scanner.cleanTtlCapMs } : {}),
                ...(version !== undefined ? { version } : {}),
                compute: () => compute(),
              })
            ).finding,
        },
      };
      return scanner.scan(message, ctx);
    },
  });
}
