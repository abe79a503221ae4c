import { analyseMessage, OUR_HEADER_PREFIX, type HeaderLine } from './content-key.js';
import { DeadlineSignals } from './deadline-signals.js';
import type { EvaluateOptions, Evaluation, Evaluator } from './evaluation.js';
import { lazyChild, type Logger } from './logger.js';
import { findValidMark, MARK_HEADER, verdictHeaders, type MarkCheck, type MarkKind } from './mark.js';
import type { MessageSource } from './message.js';
import type { Metrics } from './metrics.js';
import { describeFinding, describeOutcomes, type Outcome } from './outcome.js';
import { decide, type Decision, type PolicyConfig } from './policy.js';
import type { BypassMatcher, FirstFailureStore, QuarantineWriter } from './ports.js';
import { runScanner, type RunScannerDeps } from './run-scanner.js';
import type { Scanner } from './scanner.js';
import type { ScannerVersions } from './scanner-versions.js';
import { Semaphore } from './semaphore.js';
import type { VerdictMemo } from './verdict-memo.js';

export interface ScanServiceOptions {
  readonly frontEnd: string;
  readonly scanners: readonly Scanner[];
  readonly policy: PolicyConfig;
  readonly memo: VerdictMemo;
  readonly firstFailures: FirstFailureStore;
  /** Omitted by report-only callers (`sandgate scan` of a local file): decisions are reported, no copy is kept. */
  readonly quarantine?: QuarantineWriter;
  readonly markKey: Buffer;
  readonly markMaxAgeMs: number;
  readonly headersEnabled: boolean;
  readonly bypass?: BypassMatcher;
  readonly mode: 'enforce' | 'monitor';
  /**
   * CPU slots (scan.concurrency): local scanners run holding one, remote scanners take one only for
   * their CPU phases (ScanContext.cpu). A message waiting on a remote peer holds none; how many
   * messages are in progress at once is bounded by the front ends (helper.concurrency,
   * relay.maxClients, relay.queue.concurrency).
   */
  readonly concurrency: number;
  /**
   * scan.maxMessageSize: a message larger than this (bytes) is not scanned; every scanner gets
   * failed(too-large) and the policy decides as for any failure. Undefined: no limit.
   */
  readonly maxMessageSize?: number;
  /** Looks up and remembers scanner versions, stored with each verdict (src/core/scanner-versions.ts). */
  readonly versions?: ScannerVersions;
  readonly metrics: Metrics;
  readonly log: Logger;
  /**
   * Write the `message.verdict` summary line (default). Front ends that write their own per-message
   * line with the same fields (the relay's relay.message, the helper's helper.reply) turn it off, so
   * each message has one summary line.
   */
  readonly logSummary?: boolean;
  /**
   * The caller shows the check of every inbound X-Sandgate-Mark itself (Evaluation.marks; `sandgate
   * scan` prints it): a mark that does not verify is not logged as mark.invalid.
   */
  readonly reportMarks?: boolean;
  readonly now?: () => number;
}

/**
 * The verdict core: runs the scanner chain under one deadline, with cache and single-flight,
 * applies the policy, keeps quarantine copies, and says which headers a front end adds.
 */
export class ScanService implements Evaluator {
  private readonly slots: Semaphore;
  private readonly now: () => number;
  private readonly background = new Set<Promise<unknown>>();
  private readonly scannerDeps: RunScannerDeps;

  constructor(private readonly o: ScanServiceOptions) {
    if (o.scanners.length === 0) throw new Error('ScanService needs at least one scanner');
    this.slots = new Semaphore(o.concurrency);
    this.now = o.now ?? Date.now;
    this.scannerDeps = {
      memo: o.memo,
      now: this.now,
      deadlines: new DeadlineSignals(this.now),
      cpu: this.slots,
      ...(o.versions !== undefined ? { versions: o.versions } : {}),
    };
  }

  /** Waits for monitor-mode scans and background scanner work (tests, graceful shutdown). */
  async settle(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
    await this.o.memo.settle();
    await this.o.versions?.settle();
  }

  async evaluate(message: MessageSource, options: EvaluateOptions): Promise<Evaluation> {
    const started = this.now();
    // Made only if something beyond the summary line is logged for this message (finish()).
    const log = lazyChild(this.o.log, { msgId: message.msgId });
    const analysis = await analyseMessage(message);
    const { contentKey, headers } = analysis;
    const stripHeaders = unique(
      headers.filter((h) => h.name.startsWith(OUR_HEADER_PREFIX)).map((h) => canonicalName(h.name)),
    );

    const marks: MarkCheck[] = [];
    const mark = this.checkMarks(headers, contentKey, log, marks);
    if (mark !== undefined) {
      const decision = deliverUnscanned('clean', mark === 'released' ? 'released' : 'marked');
      return this.finish(message, started, {
        decision,
        outcomes: [],
        contentKey,
        stripHeaders,
        alreadyJudged: true,
        marks,
      });
    }

    const bypass = this.o.bypass?.(message.envelope);
    if (bypass !== undefined) {
      this.o.metrics.bypass.inc({ list: bypass });
      const outcomes = this.o.scanners.map((s): Outcome => ({
        scanner: s.name,
        kind: 'skipped',
        reason: 'bypass',
        cached: false,
        ms: 0,
      }));
      const decision = deliverUnscanned('unscanned', `bypass:${bypass}`, bypass);
      return this.finish(message, started, {
        decision,
        outcomes,
        contentKey,
        stripHeaders,
        alreadyJudged: false,
        marks,
      });
    }

    if (this.o.mode === 'monitor') {
      this.monitorInBackground(message, contentKey, log);
      const decision = deliverUnscanned('unscanned', 'monitor');
      return this.finish(message, started, {
        decision,
        outcomes: [],
        contentKey,
        stripHeaders,
        alreadyJudged: false,
        marks,
      });
    }

    const outcomes = await this.scanChain(message, contentKey, options, log);
    let decision = await this.decideFor(contentKey, outcomes);
    let quarantineId: string | undefined;
    if (decision.keepCopy && this.o.quarantine !== undefined) {
      try {
        quarantineId = await this.o.quarantine.put({
          message,
          contentKey,
          decision,
          outcomes,
          subject: subjectOf(headers),
        });
        this.o.metrics.quarantineWrites.inc({ result: 'ok' });
      } catch (err) {
        // No copy, no drop: the sender's MTA keeps the message and retries.
        this.o.metrics.quarantineWrites.inc({ result: 'error' });
        log.error(
          { event: 'quarantine.write_failed', err, action: decision.action },
          'quarantine write failed; answering tempfail',
        );
        decision = { ...decision, action: 'tempfail', keepCopy: false, reason: 'quarantine-failed' };
      }
    }
    return this.finish(message, started, {
      decision,
      outcomes,
      contentKey,
      stripHeaders,
      alreadyJudged: false,
      marks,
      ...(quarantineId !== undefined ? { quarantineId } : {}),
    });
  }

  /** A failure is recorded at once (it bounds the tempfail window); a clean run's clear is batched. */
  private async decideFor(contentKey: string, outcomes: readonly Outcome[]): Promise<Decision> {
    const now = this.now();
    const failed = outcomes.some((o) => o.kind === 'failed');
    let firstFailureAt: number | undefined;
    if (failed) firstFailureAt = await this.o.firstFailures.touch(contentKey, now);
    else this.o.firstFailures.clear(contentKey);
    return decide(outcomes, this.o.policy, {
      now,
      ...(firstFailureAt !== undefined ? { firstFailureAt } : {}),
    });
  }

  /**
   * Runs the chain in order, cheap first; stops at the first malicious verdict. A message over
   * scan.maxMessageSize is not scanned at all (tooLarge()). No CPU slot is held here: each scanner
   * takes one for its local work (runScanner), so a message waiting on a sandbox does not keep
   * others from being scanned.
   */
  private async scanChain(
    message: MessageSource,
    contentKey: string,
    options: EvaluateOptions,
    log: Logger,
  ): Promise<Outcome[]> {
    const limit = this.o.maxMessageSize;
    if (limit !== undefined && message.size > limit) return this.tooLarge(message.size, limit);
    const outcomes: Outcome[] = [];
    for (const scanner of this.o.scanners) {
      options.onProgress?.({ scanner: scanner.name, phase: 'start' });
      const outcome = await runScanner(scanner, message, contentKey, options, log, this.scannerDeps);
      options.onProgress?.({ scanner: scanner.name, phase: 'done' });
      outcomes.push(outcome);
      this.o.metrics.scannerOutcomes.inc({
        scanner: scanner.name,
        outcome: outcome.kind,
        reason: outcome.kind === 'failed' || outcome.kind === 'skipped' ? outcome.reason : '',
      });
      this.o.metrics.scannerSeconds.observe({ scanner: scanner.name }, outcome.ms / 1000);
      if (outcome.kind === 'malicious') break;
    }
    return outcomes;
  }

  /** The one rule for too-large messages: no scanner sees them; each is failed(too-large). */
  private tooLarge(size: number, limit: number): Outcome[] {
    return this.o.scanners.map((s): Outcome => {
      this.o.metrics.scannerOutcomes.inc({ scanner: s.name, outcome: 'failed', reason: 'too-large' });
      return {
        scanner: s.name,
        kind: 'failed',
        reason: 'too-large',
        message: `the message (${size} bytes) is larger than scan.maxMessageSize (${limit} bytes); not scanned`,
        cached: false,
        ms: 0,
      };
    });
  }

  private monitorInBackground(message: MessageSource, contentKey: string, log: Logger): void {
    const release = message.retain?.();
    const task = (async () => {
      try {
        const deadline = this.now() + 24 * 60 * 60 * 1000;
        const outcomes = await this.scanChain(message, contentKey, { deadline }, log);
        const decision = decide(outcomes, this.o.policy, { now: this.now() });
        this.o.metrics.monitorWouldBe.inc({ action: decision.action });
        log.info(
          {
            event: 'monitor.verdict',
            wouldBe: decision.action,
            reason: decision.reason,
            threats: decision.threats,
            outcomes: outcomes.map((o) => `${o.scanner}:${describeFinding(o)}`),
          },
          'monitor mode: verdict that would have applied',
        );
      } catch (err) {
        log.error({ event: 'monitor.failed', err }, 'monitor-mode scan failed');
      } finally {
        release?.();
      }
    })();
    this.background.add(task);
    void task.finally(() => this.background.delete(task));
  }

  private checkMarks(
    headers: readonly HeaderLine[],
    contentKey: string,
    log: Logger,
    checks: MarkCheck[],
  ): MarkKind | undefined {
    const values = headers.filter((h) => h.name === MARK_HEADER.toLowerCase()).map((h) => h.value);
    return findValidMark(values, this.o.markKey, contentKey, this.now(), this.o.markMaxAgeMs, (check) => {
      checks.push(check);
      this.o.metrics.marks.inc({ result: check.ok ? 'ok' : check.reason });
      if (!check.ok && this.o.reportMarks !== true) {
        log.warn(
          { event: 'mark.invalid', reason: check.reason },
          'ignoring an X-Sandgate-Mark that does not verify',
        );
      }
    });
  }

  private finish(
    message: MessageSource,
    started: number,
    parts: {
      decision: Decision;
      outcomes: readonly Outcome[];
      contentKey: string;
      stripHeaders: readonly string[];
      alreadyJudged: boolean;
      marks?: readonly MarkCheck[];
      quarantineId?: string;
    },
  ): Evaluation {
    const { decision, outcomes, contentKey } = parts;
    const ms = this.now() - started;
    if (decision.failOpen) this.o.metrics.failOpen.inc({ reason: decision.reason });
    this.o.metrics.messages.inc({
      front_end: this.o.frontEnd,
      action: decision.action,
      reason: decision.reason,
    });
    this.o.metrics.messageSeconds.observe({ front_end: this.o.frontEnd }, ms / 1000);
    // Through the root logger with msgId first: the line the message's child would write, without
    // making the child (its bindings come first in a pino line, as msgId does here).
    if (this.o.logSummary !== false) {
      this.o.log.info(
        {
          msgId: message.msgId,
          event: 'message.verdict',
          action: decision.action,
          verdict: decision.verdict,
          reason: decision.reason,
          threats: decision.threats,
          outcomes: describeOutcomes(outcomes),
          quarantineId: parts.quarantineId,
          bytes: message.size,
          ms,
          frontEnd: this.o.frontEnd,
        },
        'message verdict',
      );
    }
    return {
      msgId: message.msgId,
      decision,
      outcomes,
      contentKey,
      headers:
        decision.action === 'deliver'
          ? verdictHeaders({
              msgId: message.msgId,
              decision,
              outcomes,
              contentKey,
              markKey: this.o.markKey,
              now: this.now(),
              enabled: this.o.headersEnabled,
            })
          : [],
      stripHeaders: parts.stripHeaders,
      alreadyJudged: parts.alreadyJudged,
      ...(parts.marks !== undefined && parts.marks.length > 0 ? { marks: parts.marks } : {}),
      ms,
      ...(parts.quarantineId !== undefined ? { quarantineId: parts.quarantineId } : {}),
    };
  }
}

function canonicalName(lower: string): string {
  return lower.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

function unique<T>(items: readonly T[]): T[] {
  return [...new Set(items)];
}

function subjectOf(headers: readonly HeaderLine[]): string | undefined {
  return headers.find((h) => h.name === 'subject')?.value;
}

/**
 * A deliver decision made without running the chain: a valid mark of ours (verdict clean), a bypass
 * list or monitor mode (verdict unscanned, so the header says so).
 */
function deliverUnscanned(verdict: 'clean' | 'unscanned', reason: string, bypass?: string): Decision {
  return {
    action: 'deliver',
    keepCopy: false,
    verdict,
    reason,
    threats: [],
    failOpen: false,
    ...(bypass !== undefined ? { bypass } : {}),
  };
}
