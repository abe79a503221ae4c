import type { DeadlineSignals } from './deadline-signals.js';
import type { EvaluateOptions } from './evaluation.js';
import { lazyChild, type Logger } from './logger.js';
import type { MessageSource } from './message.js';
import { describeFinding, type Finding, type Outcome } from './outcome.js';
import type { Scanner, ScanContext } from './scanner.js';
import { failureFromError, type MemoResult, type VerdictMemo } from './verdict-memo.js';

/** What one scanner's run takes from the scan service. */
export interface RunScannerDeps {
  readonly memo: VerdictMemo;
  readonly now: () => number;
  /** The deadline signals local scanners are stopped by (shared per slot: see DeadlineSignals). */
  readonly deadlines: DeadlineSignals;
}

/**
 * Runs one scanner of the chain within the message's deadline: local scanners directly, the others
 * through the verdict memo (cache and single-flight by scanner, fingerprint and content key).
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
  const done = (finding: Finding, cached: boolean): Outcome => {
    const outcome: Outcome = { ...finding, scanner: scanner.name, cached, ms: service.now() - started };
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
  if (scanner.local) {
    // Cheaper to recompute than to cache or lock: run it directly, still bounded by the deadline.
    const ctx: ScanContext = {
      signal: service.deadlines.at(deadline),
      deadline,
      log,
      now: service.now,
      memo: { run: (_partKey, compute) => compute() },
    };
    try {
      return done(await scanner.scan(message, ctx), false);
    } catch (err) {
      return done(failureFromError(err), false);
    }
  }
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
    ...(releaseBytes !== undefined ? { whenDone: releaseBytes } : {}),
  });
  const { finding, source } = await result;
  return done(finding, source !== 'scan');
}

/**
 * One scan through the verdict memo (cache and single-flight by scanner, fingerprint and content
 * key), with the scanner's own sub-parts memoised under `part:<key>` (attachments mode).
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
    readonly whenDone?: () => void;
  },
): Promise<MemoResult> {
  const { fingerprint, deadline } = o;
  return memo.run({
    key: { scanner: scanner.name, fingerprint, contentKey: o.contentKey },
    deadline,
    backgroundMs: scanner.backgroundMs,
    ...(scanner.cleanTtlCapMs !== undefined ? { cleanTtlCapMs: scanner.cleanTtlCapMs } : {}),
    ...(o.whenDone !== undefined ? { whenDone: o.whenDone } : {}),
    compute: async (signal) => {
      const ctx: ScanContext = {
        signal,
        deadline,
        log: o.log,
        now: o.now,
        memo: {
          run: async (partKey, compute) =>
            (
              await memo.run({
                key: { scanner: scanner.name, fingerprint, contentKey: `part:${partKey}` },
                deadline,
                backgroundMs: scanner.backgroundMs,
                compute: () => compute(),
              })
            ).finding,
        },
      };
      return scanner.scan(message, ctx);
    },
  });
}
