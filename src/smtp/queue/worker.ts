import { EventEmitter } from 'node:events';
import { describeOutcomes } from '../../core/outcome.js';
import type { RelayQueueConfig } from '../../config/relay.js';
import type { Evaluation, Evaluator } from '../../core/evaluation.js';
import { describeError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { MessageSource } from '../../core/message.js';
import type { QuarantineWriter, RelayQueueStore } from '../../core/ports.js';
import type { QueueItem, QueueScan } from '../../core/state-records.js';
import type { NextHopSession } from '../next-hop.js';
import { sendToNextHop, type DeliveryAttempt } from './delivery.js';
import { expirePending, queueFailureDsn, wantsFailureNotice } from './failure-dsn.js';
import type { SessionPool } from '../session-pool.js';

export type QueueOutcome = 'delivered' | 'deferred' | 'bounced' | 'quarantined' | 'failed';

export interface QueueWorkerOptions {
  readonly store: RelayQueueStore;
  readonly evaluator: Evaluator;
  /** Blocked mail goes here when the core did not already keep a copy. */
  readonly quarantine: QuarantineWriter;
  readonly pool: SessionPool;
  readonly config: RelayQueueConfig;
  /** Reporting-MTA in DSNs. */
  readonly hostname: string;
  /** The next hop as shown in DSNs and logs. */
  readonly nextHop: string;
  readonly log: Logger;
  readonly now?: () => number;
  /** Longest sleep between looks at the queue (a `sandgate queue retry` from another process). */
  readonly pollMs?: number;
}

/**
 * Works the relay queue: each due item is scanned once (the deadline is the queue's), then handed
 * on with its original envelope; per-recipient results are recorded right after the next hop's
 * reply, so a retry sends only to recipients still pending. Blocked mail goes to the quarantine,
 * never back to the (possibly forged) sender. Permanent refusals and expired items get a DSN to the
 * envelope sender (none for the null sender), queued like any message, in the same transaction that
 * removes the item.
 */
export class QueueWorker extends EventEmitter<{ outcome: [{ id: string; outcome: QueueOutcome }] }> {
  private readonly busy = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private readonly active = new Set<NextHopSession>();
  private readonly abort = new AbortController();
  private readonly now: () => number;
  private readonly pollMs: number;
  private timer: NodeJS.Timeout | undefined;
  private wakeQueued = false;
  /** A look at the queue is running; `pumpAgain`: another was asked for meanwhile. */
  private pumping = false;
  private pumpAgain = false;
  private started = false;
  private stopping = false;
  private idleWaiters: Array<() => void> = [];
  /** The next hop could not be reached: no deliveries are tried before this time (scans go on). */
  private hopDownUntil = 0;
  private hopFailures = 0;

  constructor(private readonly o: QueueWorkerOptions) {
    super();
    this.now = o.now ?? Date.now;
    this.pollMs = o.pollMs ?? 5000;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.pump();
  }

  /** Something was queued or changed: look at the queue soon. */
  wake(): void {
    if (!this.started || this.stopping || this.wakeQueued) return;
    this.wakeQueued = true;
    setImmediate(() => {
      this.wakeQueued = false;
      this.pump();
    });
  }

  get inFlight(): number {
    return this.busy.size;
  }

  /** Resolves when the queue is empty and nothing is being worked on. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Graceful stop: takes no new items; items in progress get `timeoutMs` to finish, then their
   * next-hop sessions are closed and their scans aborted. Unfinished items stay queued intact.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    const all = Promise.all([...this.running]);
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (late) {
      this.abort.abort(new Error('relay queue is stopping'));
      await Promise.all([...this.active].map((s) => s.close().catch(() => undefined)));
      await all;
    }
    await this.o.pool.close();
  }

  private isIdle(): boolean {
    return this.busy.size === 0 && this.o.store.load.messages === 0;
  }

  /** Looks at the queue (one look at a time; a wake during one makes another right after it). */
  private pump(): void {
    if (this.stopping) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    void this.pumpOnce()
      .catch((err: unknown) => {
        // The queue could not be read (the state busy or unreachable): look again after pollMs.
        this.o.log.error(
          { event: 'queue.pump_failed', err: describeError(err) },
          'cannot read the relay queue',
        );
        this.schedule(this.pollMs);
      })
      .finally(() => {
        this.pumping = false;
        if (this.pumpAgain) {
          this.pumpAgain = false;
          this.pump();
        }
      });
  }

  private async pumpOnce(): Promise<void> {
    const now = this.now();
    const hopDown = this.hopDownUntil > now;
    const free = this.o.config.concurrency - this.busy.size;
    if (free > 0) {
      // While the next hop is down, only scans (and expiries) go on; the rest wait for it.
      const due = await this.o.store.due(
        now,
        free,
        this.busy,
        hopDown ? now - this.o.config.maxLifetime : undefined,
      );
      for (const id of due) if (!this.stopping) this.launch(id);
    }
    if (this.isIdle()) for (const w of this.idleWaiters.splice(0)) w();
    if (this.stopping || this.busy.size >= this.o.config.concurrency) return; // pumped again when a slot frees
    const next = hopDown ? this.hopDownUntil : await this.o.store.nextDue(this.busy);
    this.schedule(next === undefined ? this.pollMs : Math.min(this.pollMs, Math.max(0, next - now)));
  }

  private schedule(wait: number): void {
    if (this.stopping) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.pump(), wait);
    this.timer.unref();
  }

  private launch(id: string): void {
    this.busy.add(id);
    const p: Promise<void> = this.process(id)
      .catch(async (err: unknown) => {
        this.o.log.error(
          { event: 'queue.item_failed', msgId: id, err: describeError(err) },
          'queue item failed',
        );
        try {
          const item = await this.o.store.get(id);
          if (item && !this.stopping)
            await this.o.store.defer(id, this.now() + this.backoff(item.attempts + 1), describeError(err));
        } catch (again) {
          // Left due as it is: the next look at the queue tries it again.
          this.o.log.error(
            { event: 'queue.item_failed', msgId: id, err: describeError(again) },
            'cannot record the failed attempt',
          );
        }
      })
      .finally(() => {
        this.busy.delete(id);
        this.running.delete(p);
        this.wake();
      });
    this.running.add(p);
  }

  private async process(id: string): Promise<void> {
    const item = await this.o.store.get(id);
    if (item === undefined) return;
    const log = this.o.log.child({ msgId: id });
    const scan = item.scan ?? (await this.scan(item, log));
    if (scan === undefined) return;
    await this.deliver(item, scan, log);
  }

  /** Scans a queued message; returns what delivery needs, or undefined when the item was dealt with. */
  private async scan(item: QueueItem, log: Logger): Promise<QueueScan | undefined> {
    const message = this.o.store.message(item);
    let ev: Evaluation;
    try {
      ev = await this.o.evaluator.evaluate(message, {
        deadline: this.now() + this.o.config.scanDeadline,
        signal: this.abort.signal,
      });
    } catch (err) {
      if (this.stopping) return undefined;
      await this.deferOrExpire(item, `scan failed: ${describeError(err)}`, log);
      return undefined;
    }
    const d = ev.decision;
    log.info(
      {
        event: 'queue.scanned',
        action: d.action,
        reason: d.reason,
        verdict: d.verdict,
        threats: d.threats,
        outcomes: describeOutcomes(ev.outcomes),
        scanMs: ev.ms,
        ...(ev.quarantineId !== undefined ? { quarantineId: ev.quarantineId } : {}),
      },
      'queued message scanned',
    );
    switch (d.action) {
      case 'deliver': {
        const scan: QueueScan = {
          headers: ev.headers,
          stripHeaders: ev.stripHeaders,
          verdict: d.verdict,
          reason: d.reason,
        };
        await this.o.store.setScan(item.id, scan);
        return scan;
      }
      case 'tempfail':
        if (this.stopping) return undefined;
        await this.deferOrExpire(item, `scan: ${d.reason}`, log, ev);
        return undefined;
      case 'reject':
      case 'discard':
      case 'quarantine':
        // Queue mode never bounces blocked mail (senders are forged): it stays in the quarantine.
        await this.quarantine(item, message, ev, log);
        return undefined;
    }
  }

  /** Makes sure a quarantine copy exists, then removes the item. */
  private async quarantine(
    item: QueueItem,
    message: MessageSource,
    ev: Pick<Evaluation, 'decision' | 'contentKey' | 'outcomes' | 'quarantineId'>,
    log: Logger,
  ): Promise<void> {
    let qid = ev.quarantineId;
    if (qid === undefined) {
      try {
        qid = await this.o.quarantine.put({
          message,
          contentKey: ev.contentKey,
          decision: { ...ev.decision, keepCopy: true },
          outcomes: ev.outcomes,
        });
      } catch (err) {
        // Kept in the queue: tried again later, never dropped.
        log.error({ event: 'queue.quarantine_failed', err: describeError(err) }, 'quarantine write failed');
        await this.o.store.defer(
          item.id,
          this.now() + this.backoff(item.attempts + 1),
          `quarantine: ${describeError(err)}`,
        );
        this.emit('outcome', { id: item.id, outcome: 'deferred' });
        return;
      }
    }
    await this.o.store.remove(item.id);
    log.info(
      {
        event: 'queue.quarantined',
        quarantineId: qid,
        action: ev.decision.action,
        reason: ev.decision.reason,
      },
      'queued message kept in the quarantine',
    );
    this.emit('outcome', { id: item.id, outcome: 'quarantined' });
  }

  private async deliver(item: QueueItem, scan: QueueScan, log: Logger): Promise<void> {
    const pending = item.recipients.filter((r) => r.state === 'pending');
    if (pending.length === 0) return this.finish(item, log);
    const attempt: DeliveryAttempt = { results: [], temporary: undefined };
    let session: NextHopSession | undefined;
    let healthy = false;
    try {
      try {
        session = await this.o.pool.acquire(this.abort.signal);
        this.hopFailures = 0;
        this.hopDownUntil = 0;
      } catch (err) {
        this.hopFailures++;
        this.hopDownUntil = this.now() + this.backoff(this.hopFailures);
        log.info(
          {
            event: 'queue.next_hop_down',
            nextHop: this.o.nextHop,
            retryInMs: this.hopDownUntil - this.now(),
          },
          'next hop unreachable; deliveries paused',
        );
        throw err;
      }
      this.active.add(session);
      await sendToNextHop(session, item, pending, scan, this.o.store, attempt);
      healthy = true;
    } catch (err) {
      attempt.temporary = `${this.o.nextHop}: ${describeError(err)}`;
    } finally {
      if (session !== undefined) {
        this.active.delete(session);
        this.o.pool.release(session, healthy);
      }
    }
    // Recorded at once: a recipient the next hop took is never sent to again (a crash before this
    // line is the one window in which a message can go out twice).
    await this.o.store.record(item.id, attempt.results, this.now());
    const delivered = attempt.results.filter((r) => r.state === 'delivered').length;
    if (delivered > 0)
      log.info({ event: 'queue.delivered', recipients: delivered, nextHop: this.o.nextHop }, 'delivered');
    const fresh = await this.o.store.get(item.id);
    if (fresh === undefined) return; // deleted by an operator meanwhile
    if (fresh.recipients.every((r) => r.state !== 'pending')) return this.finish(fresh, log);
    if (this.stopping && !healthy) return;
    await this.deferOrExpire(fresh, attempt.temporary ?? 'deferred', log);
  }

  /** Every recipient is done: DSN for the failed ones (unless the sender is null), then remove. */
  private async finish(item: QueueItem, log: Logger): Promise<void> {
    const failed = item.recipients.filter((r) => r.state === 'failed');
    const notify = failed.filter((r) => wantsFailureNotice(r.params));
    if (notify.length === 0 || item.envelope.sender === '') {
      await this.o.store.remove(item.id);
      if (failed.length > 0) {
        log.warn(
          {
            event: 'queue.failed_no_dsn',
            recipients: failed.length,
            nullSender: item.envelope.sender === '',
          },
          'recipients failed; no DSN (null sender or NOTIFY)',
        );
      }
      this.emit('outcome', {
        id: item.id,
        outcome: failed.length === item.recipients.length ? 'failed' : 'delivered',
      });
      return;
    }
    try {
      const now = this.now();
      const dsnId = await queueFailureDsn(this.o.store, item, notify, {
        reportingMta: this.o.config.reportingMta ?? this.o.hostname,
        nextHop: this.o.nextHop,
        now,
      });
      log.info({ event: 'queue.dsn', dsnId, recipients: notify.length }, 'DSN queued to the sender');
      this.emit('outcome', { id: item.id, outcome: 'bounced' });
    } catch (err) {
      log.error(
        { event: 'queue.dsn_failed', err: describeError(err) },
        'could not queue the DSN; retrying later',
      );
      await this.o.store.defer(
        item.id,
        this.now() + this.backoff(item.attempts + 1),
        `dsn: ${describeError(err)}`,
      );
    }
  }

  /** Retry later, or, past relay.queue.maxLifetime, give up: quarantine (never scanned) or DSN. */
  private async deferOrExpire(item: QueueItem, error: string, log: Logger, ev?: Evaluation): Promise<void> {
    const now = this.now();
    if (now - item.createdAt < this.o.config.maxLifetime) {
      const at = now + this.backoff(item.attempts + 1);
      await this.o.store.defer(item.id, at, error);
      log.info(
        { event: 'queue.deferred', attempts: item.attempts + 1, retryInMs: at - now, err: error },
        'deferred',
      );
      this.emit('outcome', { id: item.id, outcome: 'deferred' });
      return;
    }
    if (item.scan === undefined) {
      // Never judged clean: it goes to the quarantine, not back to the sender.
      log.warn({ event: 'queue.expired', phase: 'scan', err: error }, 'queue lifetime over before a verdict');
      const decision = {
        action: 'quarantine' as const,
        keepCopy: true,
        verdict: 'unscanned' as const,
        reason: 'queue-expired',
        threats: [],
        failOpen: false,
      };
      await this.quarantine(
        item,
        this.o.store.message(item),
        { decision, contentKey: ev?.contentKey ?? '', outcomes: ev?.outcomes ?? [] },
        log,
      );
      return;
    }
    log.warn({ event: 'queue.expired', phase: 'delivery', err: error }, 'queue lifetime over; giving up');
    await expirePending(this.o.store, item, error, now);
    const fresh = await this.o.store.get(item.id);
    if (fresh) await this.finish(fresh, log);
  }

  /** Exponential backoff from retryMin to retryMax, with ±10 % jitter. */
  private backoff(attempt: number): number {
    const base = Math.min(this.o.config.retryMax, this.o.config.retryMin * 2 ** Math.min(attempt - 1, 30));
    return Math.round(base * (0.9 + Math.random() * 0.2));
  }
}
