import { setTimeout as sleep } from 'node:timers/promises';
import { AdaptiveWindow, AgeTrend, type WindowTicket } from '../../core/adaptive-window.js';
import type { PtSandboxConfig } from '../../config/pt-sandbox.js';
import { isSandgateError, type SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { createMetrics, type Metrics } from '../../core/metrics.js';
import type { Finding } from '../../core/outcome.js';
import type { PtLoadStore, PtTaskStore } from '../../core/ports.js';
import type { PtTask } from '../../core/state-records.js';
import { failureFromError } from '../../core/verdict-memo.js';
import type { BodySource, PtSandboxClient } from './client.js';
import { detectionNames, mapResult } from './mapping.js';
import type { CreateScanTaskBody, ScanResult, TaskMode } from './types.js';

/** What the runner reports its window and queue to (PtLoadStore.report/remove), for the watch. */
export type LoadPort = Pick<PtLoadStore, 'report' | 'remove'>;

/** One piece of content to analyse. */
export interface TaskItem {
  /** 'msg:<content key>', 'nmsg:<normalised key>' or 'part:<sha256>': the key of the pt_task row. */
  readonly key: string;
  readonly size: number;
  readonly fileName: string;
  /** Runs `fn` with a body that can be opened (several times, for retries) while `fn` runs. */
  withBody<T>(fn: (body: BodySource) => Promise<T>): Promise<T>;
}

export interface TaskRunnerOptions {
  readonly config: PtSandboxConfig;
  readonly client: PtSandboxClient;
  /** Tasks in flight, shared by every process on the state. */
  readonly store: PtTaskStore;
  /** Settings part of the fingerprint: tasks are shared only between identical settings. */
  readonly settingsFingerprint: string;
  /** Identifies this process in the pt_task table. */
  readonly owner: string;
  /** Fingerprint of the API token (secretFingerprint): stored with each task this process creates. */
  readonly tokenFingerprint: string;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** Where this process reports its window and queue (pt_process); none: not reported. */
  readonly load?: LoadPort;
  /** 'helper', 'relay', 'cli', ... in the load row. */
  readonly frontEnd?: string;
  readonly now?: () => number;
}

interface Task {
  readonly scanId: string;
  readonly mode: TaskMode;
  readonly submittedAt: number;
  readonly resumed: boolean;
  /** This process owns the task (submitted or adopted it) and renews its lease; else it polls alongside the owner. */
  owned: boolean;
  /** The owner in the state when this process took the task up (named when it adopts the task later). */
  readonly owner?: string;
}

type PollOutcome = { kind: 'done'; finding: Finding } | { kind: 'lost' };

/** Window decrease when the appliance refuses a submission (429/503), and when task ages grow. */
const REFUSED_FACTOR = 0.5;
const AGE_FACTOR = 0.7;
/** A refused submission waits retries.backoff x its refusals so far (at most this many steps), or Retry-After, capped. */
const MAX_REFUSED_STEPS = 5;
const MAX_REFUSED_WAIT_MS = 30_000;
/** The load row is written at most this often while something changes, and at least this often as a heartbeat. */
const LOAD_REPORT_MS = 1_000;
const LOAD_HEARTBEAT_MS = 10_000;

/**
 * The wait before the next poll of a task: the previous wait times `polling.growth`, from
 * `polling.firstDelay` up to `polling.interval` (`polling.slowInterval` once the task is older than
 * `polling.slowAfter`). With the defaults a task is polled 0.5, 1.25, 2.4, 4.1, 6.6 and 10.4 s after
 * submission, then every 5 s, and after a minute every 7.5 s, 11 s, then 15 s.
 */
export function nextPollWait(
  previousWaitMs: number,
  ageMs: number,
  polling: PtSandboxConfig['polling'],
): number {
  const cap = ageMs >= polling.slowAfter ? polling.slowInterval : polling.interval;
  return Math.max(1, Math.min(cap, Math.max(previousWaitMs * polling.growth, polling.firstDelay)));
}

/**
 * Submits content to PT Sandbox and polls for its verdict, at most once per content however many
 * callers and processes ask: in this process a shared promise, across processes and restarts the
 * pt_task row (claim, then scan_id). Submissions go through an adaptive in-flight window (AIMD:
 * src/core/adaptive-window.ts) that backs off when the appliance refuses work (429/503) or its
 * task ages grow, and grows again while answers are healthy.
 */
export class TaskRunner {
  private readonly running = new Map<string, Promise<Finding>>();
  readonly window: AdaptiveWindow;
  private readonly ages: AgeTrend;
  private readonly now: () => number;
  private readonly cfg: PtSandboxConfig;
  private readonly metrics: Metrics;
  private readonly startedAt: number;
  private submittedTotal = 0;
  private refusedTotal = 0;
  private loadDirty = false;
  private loadWrittenAt = 0;
  private loadTimer: NodeJS.Timeout | undefined;
  private loadWriting = false;
  private loadWrite: Promise<void> = Promise.resolve();
  private closed = false;
  /** pt_task keys this process owns (claimed, submitted or adopted), with how many runs hold each. */
  private readonly owned = new Map<string, number>();
  private leaseTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: TaskRunnerOptions) {
    this.cfg = o.config;
    this.now = o.now ?? Date.now;
    this.startedAt = this.now();
    this.metrics = o.metrics ?? createMetrics({ defaultMetrics: false });
    this.window = new AdaptiveWindow({
      start: o.config.inflight.start,
      min: o.config.inflight.min,
      max: o.config.inflight.max,
      now: this.now,
      onChange: () => this.changed(),
    });
    // A median must grow by half and by more than the first poll's delay: the ages it sees are
    // those of polls (the last one that found the task running), a step of the schedule apart.
    this.ages = new AgeTrend({ slackMs: o.config.polling.firstDelay, now: this.now });
    this.metrics.ptWindow.set(this.window.limit);
  }

  /** Tasks submitted by this process and not yet finished; callers waiting for a slot; the window. */
  get inflight(): { active: number; waiting: number; limit: number } {
    return { active: this.window.inUse, waiting: this.window.pending, limit: this.window.limit };
  }

  /** Stops reporting the load and removes this process's row. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.loadTimer);
    this.loadTimer = undefined;
    clearInterval(this.leaseTimer);
    this.leaseTimer = undefined;
    try {
      await this.loadWrite;
      await this.o.load?.remove(this.o.owner);
    } catch {
      // The state may be closing: the row ages out of the watch.
    }
    try {
      // Tasks still running on the appliance: another process may adopt them at once.
      if (this.owned.size > 0) await this.o.store.renew(this.o.owner, this.now());
    } catch {
      // Their leases run out on their own.
    }
  }

  /** Never throws: every problem is a failed Finding. */
  run(item: TaskItem, signal: AbortSignal, deadline: number, log: Logger): Promise<Finding> {
    const shared = this.running.get(item.key);
    if (shared !== undefined) return shared;
    const work = this.runOnce(item, signal, deadline, log)
      .catch((err: unknown) => this.failure(err, log))
      .finally(() => this.running.delete(item.key));
    this.running.set(item.key, work);
    return work;
  }

  private async runOnce(
    item: TaskItem,
    signal: AbortSignal,
    deadline: number,
    log: Logger,
  ): Promise<Finding> {
    let resubmitted = false;
    for (;;) {
      const obtained = await this.obtain(item, signal, deadline, log);
      if ('finding' in obtained) return obtained.finding;
      const { task, ticket } = obtained;
      const tlog = log.child({ scanId: task.scanId });
      let outcome: PollOutcome;
      try {
        outcome = await this.poll(item, task, ticket, signal, tlog);
      } finally {
        ticket?.release();
        if (task.owned) {
          this.disown(item.key);
          // Stopped polling a task that may still run (deadline and background limit, shutdown):
          // give its lease up so that the next process needing the content adopts it at once.
          if (signal.aborted) await this.giveUp(item, task);
        }
      }
      if (outcome.kind === 'done') return outcome.finding;
      await this.o.store.finish(item.key, this.o.settingsFingerprint, task.scanId, this.now(), 'lost');
      if (resubmitted) {
        return {
          kind: 'failed',
          reason: 'protocol',
          message: 'PT Sandbox lost the task twice (404 while polling)',
        };
      }
      resubmitted = true;
      tlog.warn(
        { event: 'pt.task_lost' },
        'PT Sandbox no longer knows the task (404); submitting again once',
      );
    }
  }

  /**
   * A task to poll: resumed from the pt_task table, or submitted here within the window. Waiting for
   * a window slot, and for a refused submission's next try, ends at the message deadline (the
   * caller then answers tempfail and the MTA's retry queues again); a task once submitted is
   * polled on in the background.
   */
  private async obtain(
    item: TaskItem,
    signal: AbortSignal,
    deadline: number,
    log: Logger,
  ): Promise<{ task: Task; ticket?: WindowTicket } | { finding: Finding }> {
    const fp = this.o.settingsFingerprint;
    const claimTimeoutMs = this.cfg.requestTimeout * this.cfg.retries.attempts * 2 + this.cfg.connectTimeout;
    // Made only when something has to wait (a slot, a refused submission's next try).
    let deadlineSignal: AbortSignal | undefined;
    const untilDeadline = (): AbortSignal =>
      (deadlineSignal ??= AbortSignal.any([signal, AbortSignal.timeout(Math.max(1, deadline - this.now()))]));
    let waitMs = 50;
    for (;;) {
      if (signal.aborted) return { finding: abortedFinding() };
      // A task already in flight (another process, or before a restart) is polled without a slot.
      const existing = await this.o.store.get(item.key, fp);
      if (
        existing?.scanId !== undefined &&
        existing.mode === this.cfg.mode &&
        this.now() - existing.submittedAt <= this.cfg.maxTaskAge
      ) {
        if (this.sameToken(existing)) return { task: await this.takeUp(item, existing, log) };
        log.warn(
          {
            event: 'pt.task_foreign_token',
            scanId: existing.scanId,
            owner: existing.owner,
            tokenFingerprint: existing.tokenFingerprint,
          },
          'a PT Sandbox task for this content was created with another API token (its report cannot be read with ours); submitting it again',
        );
      }
      let ticket: WindowTicket | undefined = this.window.tryAcquire();
      try {
        ticket ??= await this.window.acquire(untilDeadline());
      } catch {
        return { finding: signal.aborted ? abortedFinding() : windowTimeout() };
      }
      const claim = await this.o.store.claim(item.key, fp, {
        mode: this.cfg.mode,
        owner: this.o.owner,
        now: this.now(),
        maxTaskAgeMs: this.cfg.maxTaskAge,
        claimTimeoutMs,
        tokenFingerprint: this.o.tokenFingerprint,
        leaseUntil: this.now() + this.cfg.taskLease,
      });
      if (!claim.claimed) {
        ticket.release();
        if (claim.task.scanId !== undefined) return { task: await this.takeUp(item, claim.task, log) };
        // Another process is uploading the same content: wait for its scan_id.
        await sleep(waitMs, undefined, { signal }).catch(() => undefined);
        waitMs = Math.min(waitMs * 2, 1000);
        continue;
      }
      // Ours: the heartbeat renews the claim's lease while the upload runs.
      this.own(item.key);
      let submitted: { scanId: string; ticket: WindowTicket } | { finding: Finding };
      try {
        submitted = await this.submit(item, ticket, signal, untilDeadline, deadline, log);
      } catch (err) {
        this.disown(item.key);
        await this.o.store.release(item.key, fp, this.o.owner);
        return { finding: this.failure(err, log) };
      }
      if ('finding' in submitted) {
        this.disown(item.key);
        await this.o.store.release(item.key, fp, this.o.owner);
        return submitted;
      }
      const now = this.now();
      await this.o.store.setScanId(item.key, fp, this.o.owner, submitted.scanId, now);
      this.submittedTotal++;
      this.metrics.ptSubmitted.inc();
      this.changed();
      log.info(
        { event: 'pt.task_submitted', scanId: submitted.scanId, mode: this.cfg.mode, bytes: item.size },
        'submitted to PT Sandbox',
      );
      return {
        task: {
          scanId: submitted.scanId,
          mode: this.cfg.mode,
          submittedAt: now,
          resumed: false,
          owned: true,
        },
        ticket: submitted.ticket,
      };
    }
  }

  /** Rows without a token fingerprint were made before it was recorded: assumed ours. */
  private sameToken(task: PtTask): boolean {
    return task.tokenFingerprint === undefined || task.tokenFingerprint === this.o.tokenFingerprint;
  }

  /**
   * A task in flight that this process did not submit now: polled alongside its owner while the
   * owner's lease runs, adopted (PtTaskStore.adopt, one adopter wins) once it ran out, i.e. the
   * process that submitted it died. Never resubmitted.
   */
  private async takeUp(item: TaskItem, existing: PtTask, log: Logger): Promise<Task> {
    const scanId = existing.scanId ?? '';
    const task: Task = {
      scanId,
      mode: existing.mode === 'source' ? 'source' : 'analysis',
      submittedAt: existing.submittedAt,
      resumed: true,
      owned: false,
      owner: existing.owner,
    };
    const ageMs = this.now() - existing.submittedAt;
    if (await this.tryAdopt(item, task, existing.owner, log)) return task;
    log.info(
      { event: 'pt.task_resumed', scanId, ageMs, owner: existing.owner },
      'PT Sandbox task already in flight; polling it',
    );
    return task;
  }

  /** Adopts `task` when its owner's lease ran out; true when this process owns it now. */
  private async tryAdopt(item: TaskItem, task: Task, previousOwner: string, log: Logger): Promise<boolean> {
    if (task.owned) return true;
    const now = this.now();
    const adopted = await this.o.store.adopt(
      item.key,
      this.o.settingsFingerprint,
      task.scanId,
      this.o.owner,
      now,
      now + this.cfg.taskLease,
    );
    if (!adopted) return false;
    task.owned = true;
    this.own(item.key);
    this.metrics.ptAdopted.inc();
    log.warn(
      { event: 'pt.task_adopted', scanId: task.scanId, previousOwner, ageMs: now - task.submittedAt },
      'adopted a PT Sandbox task whose owner stopped renewing its lease (the process died); polling it',
    );
    return true;
  }

  private async giveUp(item: TaskItem, task: Task): Promise<void> {
    try {
      const now = this.now();
      await this.o.store.adopt(item.key, this.o.settingsFingerprint, task.scanId, this.o.owner, now, now);
    } catch {
      // Its lease runs out on its own.
    }
  }

  private own(key: string): void {
    this.owned.set(key, (this.owned.get(key) ?? 0) + 1);
    if (this.leaseTimer !== undefined || this.closed) return;
    this.leaseTimer = setInterval(
      () => void this.renewLeases(),
      Math.max(10, Math.floor(this.cfg.taskLease / 3)),
    );
    this.leaseTimer.unref();
  }

  private disown(key: string): void {
    const n = (this.owned.get(key) ?? 0) - 1;
    if (n > 0) this.owned.set(key, n);
    else this.owned.delete(key);
  }

  /** The owner's heartbeat: renews the lease of every task this process owns; stops when it owns none. */
  private async renewLeases(): Promise<void> {
    if (this.owned.size === 0) {
      clearInterval(this.leaseTimer);
      this.leaseTimer = undefined;
      return;
    }
    try {
      await this.o.store.renew(this.o.owner, this.now() + this.cfg.taskLease);
    } catch (err) {
      this.o.log.warn(
        { event: 'pt.lease_renew_failed', err: errSummary(err) },
        'cannot renew the lease of our PT Sandbox tasks in the state database',
      );
    }
  }

  /**
   * Uploads and creates the task holding `ticket`. A refusal (429/503) halves the window and tries
   * again from the window's front row after a backoff (retries.backoff x refusals, at most 5 steps,
   * or Retry-After when the appliance sends one), until the deadline. Other transient failures
   * (5xx, connection) are retried holding the slot, also until the deadline. Throws what cannot be
   * retried.
   */
  private async submit(
    item: TaskItem,
    first: WindowTicket,
    signal: AbortSignal,
    untilDeadline: () => AbortSignal,
    deadline: number,
    log: Logger,
  ): Promise<{ scanId: string; ticket: WindowTicket } | { finding: Finding }> {
    const perTry =
      this.cfg.requestTimeout * this.cfg.retries.attempts +
      this.cfg.retries.backoff * this.cfg.retries.attempts;
    let ticket = first;
    let refusals = 0;
    for (let round = 1; ; round++) {
      try {
        const scanId = await item.withBody((body) =>
          this.submitOnce(item, body, signal, this.now() + perTry),
        );
        return { scanId, ticket };
      } catch (err) {
        if (isSandgateError(err) && err.details.overload === true && !signal.aborted) {
          refusals++;
          // Over the (now smaller) window, this slot goes; the retry waits in the front row and
          // then backs off holding its slot, so at most `capacity` refused submissions probe the
          // appliance at once and new ones queue behind them.
          ticket.release();
          this.refused(err, ticket, log);
          const after = typeof err.details.retryAfterMs === 'number' ? err.details.retryAfterMs : 0;
          const wait = Math.min(
            MAX_REFUSED_WAIT_MS,
            Math.max(after, this.cfg.retries.backoff * Math.min(refusals, MAX_REFUSED_STEPS)),
          );
          log.debug(
            { event: 'pt.submit_refused', status: err.details.status, waitMs: wait, refusals },
            'PT Sandbox refused the submission; trying again later',
          );
          try {
            ticket = await this.window.acquire(untilDeadline(), { front: true });
          } catch {
            return { finding: signal.aborted ? abortedFinding() : refusedUntilDeadline(err) };
          }
          await sleep(Math.min(wait, Math.max(0, deadline - this.now())), undefined, {
            signal: untilDeadline(),
          }).catch(() => undefined);
          if (untilDeadline().aborted) {
            ticket.release();
            return { finding: signal.aborted ? abortedFinding() : refusedUntilDeadline(err) };
          }
          continue;
        }
        const wait = this.cfg.retries.backoff * round;
        const transient = isSandgateError(err) && err.details.retryable === true;
        if (!transient || signal.aborted || this.now() + wait >= deadline) {
          ticket.release();
          throw err;
        }
        log.warn(
          { event: 'pt.submit_retry', round, waitMs: wait, err: errSummary(err) },
          'PT Sandbox submission failed, retrying',
        );
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /** Bookkeeping for a refused submission: counters, and one window decrease per round trip. */
  private refused(err: SandgateError, ticket: WindowTicket, log: Logger): void {
    this.refusedTotal++;
    this.metrics.ptRefused.inc({ status: String(err.details.status) });
    if (this.window.shrink(ticket.startedAt, REFUSED_FACTOR)) {
      this.metrics.ptBackoffs.inc({ cause: 'refused' });
      log.warn(
        {
          event: 'pt.window_decreased',
          cause: 'refused',
          status: err.details.status,
          window: Math.floor(this.window.limit),
        },
        'PT Sandbox is refusing submissions (overloaded); sending fewer tasks at once',
      );
    }
    this.changed();
  }

  /**
   * A task of ours finished: its age feeds the window (grow when healthy, shrink when ages grew).
   * The trend uses `runningAtMs`, the age at which a poll last found it still running: a lower
   * bound that our own slowness (a busy event loop polling late) cannot inflate.
   */
  private observeAge(task: Task, ticket: WindowTicket, runningAtMs: number, log: Logger): void {
    const ageMs = this.now() - task.submittedAt;
    this.metrics.ptTaskAge.observe(ageMs / 1000);
    const grew = this.ages.record(runningAtMs);
    if (!grew) {
      this.window.grow();
      return;
    }
    // Ages grow also when other processes or other systems load the appliance; only a window that
    // is the limit now (full, or with submissions waiting) shrinks, so a quiet process keeps its
    // window for the next burst.
    if (this.window.limiting && this.window.shrink(ticket.startedAt, AGE_FACTOR)) {
      this.metrics.ptBackoffs.inc({ cause: 'age' });
      log.warn(
        {
          event: 'pt.window_decreased',
          cause: 'age',
          ageMs,
          runningAtMs,
          baselineMs: this.ages.baseline,
          window: Math.floor(this.window.limit),
        },
        'PT Sandbox tasks take longer than usual (queued on the appliance); sending fewer tasks at once',
      );
    }
  }

  private changed(): void {
    this.metrics.ptInflight.set(this.window.inUse);
    this.metrics.ptWaiting.set(this.window.pending);
    this.metrics.ptWindow.set(this.window.limit);
    if (this.o.load === undefined || this.closed) return;
    this.loadDirty = true;
    if (this.loadTimer === undefined) {
      this.loadTimer = setInterval(() => this.reportLoad(), LOAD_REPORT_MS);
      this.loadTimer.unref();
      this.reportLoad();
    }
  }

  /** Writes the load row (one write at a time: a write still running skips this tick). */
  private reportLoad(): void {
    const now = this.now();
    if (this.loadWriting || (!this.loadDirty && now - this.loadWrittenAt < LOAD_HEARTBEAT_MS)) return;
    this.loadDirty = false;
    this.loadWrittenAt = now;
    this.loadWriting = true;
    this.loadWrite = this.writeLoad(now).finally(() => (this.loadWriting = false));
  }

  private async writeLoad(now: number): Promise<void> {
    try {
      await this.o.load?.report({
        owner: this.o.owner,
        frontEnd: this.o.frontEnd ?? 'unknown',
        inflight: this.window.inUse,
        waiting: this.window.pending,
        windowLimit: this.window.limit,
        windowMax: this.window.ceiling,
        submittedTotal: this.submittedTotal,
        refusedTotal: this.refusedTotal,
        startedAt: this.startedAt,
        updatedAt: now,
      });
    } catch (err) {
      this.o.log.warn(
        { event: 'pt.load_report_failed', err: errSummary(err) },
        'cannot record the PT Sandbox load in the state database',
      );
    }
  }

  private async submitOnce(
    item: TaskItem,
    body: BodySource,
    signal: AbortSignal,
    until: number,
  ): Promise<string> {
    const { client } = this.o;
    // 429/503 come back at once: submit() backs off in the window instead of retrying here.
    const call = { signal, until, retryOverload: false };
    if (this.cfg.mode === 'source') {
      return client.checkFile(
        body,
        {
          file_name: item.fileName,
          priority: this.cfg.priority,
          passwords_for_unpack: this.cfg.analysis.passwordsForUnpack,
        },
        call,
      );
    }
    const { fileUri } = await client.uploadScanFile(body, call);
    return client.createScanTask(buildTaskBody(this.cfg, fileUri, item.fileName), call);
  }

  private async poll(
    item: TaskItem,
    task: Task,
    ticket: WindowTicket | undefined,
    signal: AbortSignal,
    log: Logger,
  ): Promise<PollOutcome> {
    const { polling } = this.cfg;
    const fp = this.o.settingsFingerprint;
    let wait = task.resumed
      ? Math.max(polling.firstDelay, Math.min(polling.interval, (this.now() - task.submittedAt) / 2))
      : polling.firstDelay;
    let next = task.resumed ? this.now() : task.submittedAt + wait;
    // The age at which a poll last found the task still running (0: none did yet).
    let runningAt = 0;
    for (;;) {
      const sleepMs = next - this.now();
      if (sleepMs > 0) await sleep(sleepMs, undefined, { signal }).catch(() => undefined);
      if (signal.aborted) return { kind: 'done', finding: abortedFinding(task.scanId) };
      const age = this.now() - task.submittedAt;
      if (age > this.cfg.maxTaskAge) {
        await this.o.store.finish(item.key, fp, task.scanId, this.now(), 'timeout');
        return {
          kind: 'done',
          finding: {
            kind: 'failed',
            reason: 'timeout',
            message: `PT Sandbox task still running after ${age} ms`,
            details: { scanId: task.scanId },
          },
        };
      }
      wait = nextPollWait(wait, age, polling);
      next = this.now() + wait;
      const sentAt = age;
      let status;
      try {
        status = await this.o.client.taskStatus(task.mode, task.scanId, this.cfg.allowPreflight, {
          signal,
          until: this.now() + this.cfg.requestTimeout,
        });
      } catch (err) {
        if (isSandgateError(err) && err.details.status === 404) return { kind: 'lost' };
        if (isSandgateError(err) && (err.code === 'ERR_ABORTED' || signal.aborted)) {
          return { kind: 'done', finding: abortedFinding(task.scanId) };
        }
        if (isSandgateError(err) && (err.details.retryable === true || err.code === 'ERR_SCANNER_TIMEOUT')) {
          log.warn({ event: 'pt.poll_failed', err: errSummary(err) }, 'PT Sandbox poll failed; polling on');
          continue;
        }
        return { kind: 'done', finding: this.failure(err, log, task.scanId) };
      }
      await this.o.store.touch(item.key, fp, this.now());
      // Polling alongside an owner that may have died since: adopt the task once its lease ran out.
      if (!task.owned) await this.tryAdopt(item, task, task.owner ?? 'unknown', log);
      const result = status.result;
      if (result === undefined || status.is_preflight === true) runningAt = sentAt;
      if (result === undefined) continue;
      if (status.is_preflight === true) {
        if (result.verdict?.toUpperCase() !== 'DANGEROUS') continue;
        log.info(
          { event: 'pt.preflight_dangerous' },
          'PT Sandbox preflight result is DANGEROUS; not waiting for the rest',
        );
      }
      if (ticket !== undefined && status.is_preflight !== true) this.observeAge(task, ticket, runningAt, log);
      const finding = await this.conclude(task, result, status.is_preflight === true, signal, log);
      if (status.is_preflight !== true)
        await this.o.store.finish(item.key, fp, task.scanId, this.now(), 'verdict');
      return { kind: 'done', finding };
    }
  }

  private async conclude(
    task: Task,
    result: ScanResult,
    preflight: boolean,
    signal: AbortSignal,
    log: Logger,
  ): Promise<Finding> {
    const verdict = result.verdict?.toUpperCase();
    let threats: string[] = [];
    if (verdict === 'DANGEROUS' || verdict === 'UNWANTED') {
      try {
        const report = await this.o.client.report(task.mode, task.scanId, {
          signal,
          until: this.now() + this.cfg.requestTimeout,
        });
        threats = detectionNames(report.artifacts);
      } catch (err) {
        log.warn(
          { event: 'pt.report_failed', err: errSummary(err) },
          'could not read the PT Sandbox report for detection names',
        );
      }
      if (threats.length === 0 && result.threat !== undefined && result.threat.trim() !== '')
        threats = [result.threat.trim().slice(0, 120)];
    }
    const finding = mapResult(result, threats, {
      scanId: task.scanId,
      ...(preflight ? { preflight: true } : {}),
      ...(task.resumed ? { resumed: true } : {}),
    });
    log.info(
      {
        event: 'pt.task_verdict',
        verdict: verdict ?? 'none',
        scanState: result.scan_state ?? 'none',
        outcome: finding.kind,
        threats,
      },
      'PT Sandbox verdict',
    );
    return finding;
  }

  private failure(err: unknown, log: Logger, scanId?: string): Finding {
    if (isSandgateError(err) && (err.details.status === 401 || err.details.status === 403)) {
      const endpoint = String(err.details.endpoint ?? '');
      const permission = endpoint.startsWith('scan/')
        ? '"check with source settings" (SCAN_WITH_PREDEFINED_SETTINGS)'
        : '"scan with extended settings" (SCAN_WITH_EXTENDED_SETTINGS)';
      log.error(
        { event: 'pt.auth_failed', status: err.details.status, endpoint },
        `PT Sandbox refused the API token (HTTP ${String(err.details.status)}): the token is wrong, or it lacks the permission ${permission}`,
      );
    } else if (isSandgateError(err) && err.details.tls !== undefined) {
      log.error(
        { event: 'pt.tls_failed', tls: err.details.tls },
        'TLS to PT Sandbox failed: set scanners.ptSandbox.caFile to the appliance certificate (or its CA)',
      );
    } else {
      log.warn({ event: 'pt.task_failed', err: errSummary(err) }, 'PT Sandbox task failed');
    }
    const f = failureFromError(err);
    return scanId === undefined ? f : { ...f, details: { scanId } };
  }
}

function refusedUntilDeadline(err: SandgateError): Finding {
  return {
    kind: 'failed',
    reason: 'timeout',
    message: `PT Sandbox refused the submission (HTTP ${String(err.details.status)}) until the deadline`,
  };
}

function windowTimeout(): Finding {
  return {
    kind: 'failed',
    reason: 'timeout',
    message: 'waited for a PT Sandbox in-flight slot until the deadline',
  };
}

function abortedFinding(scanId?: string): Finding {
  return {
    kind: 'failed',
    reason: 'timeout',
    message: 'stopped waiting for PT Sandbox (deadline or background limit)',
    ...(scanId !== undefined ? { details: { scanId } } : {}),
  };
}

function errSummary(err: unknown): Record<string, unknown> {
  if (isSandgateError(err)) {
    const e: SandgateError = err;
    return { code: e.code, message: e.message, ...e.details };
  }
  return { message: err instanceof Error ? err.message : String(err) };
}

/** The createScanTask body from the operator's options; absent options are left out, never null. */
export function buildTaskBody(cfg: PtSandboxConfig, fileUri: string, fileName: string): CreateScanTaskBody {
  const a = cfg.analysis;
  return {
    file_uri: fileUri,
    file_name: fileName,
    async_result: true,
    short_result: true,
    priority: cfg.priority,
    options: {
      analysis_depth: a.depth,
      ...(a.passwordsForUnpack.length > 0 ? { passwords_for_unpack: [...a.passwordsForUnpack] } : {}),
      cache_enabled: a.cacheEnabled,
      url_extract_enabled: a.urlExtract,
      sandbox: a.sandbox.enabled
        ? {
            enabled: true,
            ...(a.sandbox.imageId !== undefined ? { image_id: a.sandbox.imageId } : {}),
            analysis_duration: Math.round(a.sandbox.duration / 1000),
          }
        : { enabled: false },
    },
  };
}
