import { setTimeout as sleep } from 'node:timers/promises';
import type { PtSandboxConfig } from '../../config/pt-sandbox.js';
import { isSandgateError, type SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Finding } from '../../core/outcome.js';
import { Semaphore } from '../../core/semaphore.js';
import { failureFromError } from '../../core/verdict-memo.js';
import type { BodySource, PtSandboxClient } from './client.js';
import { detectionNames, mapResult } from './mapping.js';
import type { CreateScanTaskBody, ScanResult, TaskMode } from './types.js';

/** Where tasks in flight are recorded (src/store/pt-tasks.ts in production, shared by processes). */
export interface TaskStorePort {
  claim(
    contentKey: string,
    fingerprint: string,
    claim: { mode: string; owner: string; now: number; maxTaskAgeMs: number; claimTimeoutMs: number },
  ):
    | { claimed: true }
    | { claimed: false; task: { scanId: string | undefined; mode: string; submittedAt: number } };
  setScanId(contentKey: string, fingerprint: string, owner: string, scanId: string, now: number): void;
  touch(contentKey: string, fingerprint: string, now: number): void;
  remove(contentKey: string, fingerprint: string, scanId: string): void;
  release(contentKey: string, fingerprint: string, owner: string): void;
}

/** One piece of content to analyse. */
export interface TaskItem {
  /** 'msg:<content key>' or 'part:<sha256>': the key of the pt_task row. */
  readonly key: string;
  readonly size: number;
  readonly fileName: string;
  /** Runs `fn` with a body that can be opened (several times, for retries) while `fn` runs. */
  withBody<T>(fn: (body: BodySource) => Promise<T>): Promise<T>;
}

export interface TaskRunnerOptions {
  readonly config: PtSandboxConfig;
  readonly client: PtSandboxClient;
  readonly store: TaskStorePort;
  /** Settings part of the fingerprint: tasks are shared only between identical settings. */
  readonly settingsFingerprint: string;
  /** Identifies this process in the pt_task table. */
  readonly owner: string;
  readonly log: Logger;
  readonly now?: () => number;
}

interface Task {
  readonly scanId: string;
  readonly mode: TaskMode;
  readonly submittedAt: number;
  readonly resumed: boolean;
}

type PollOutcome = { kind: 'done'; finding: Finding } | { kind: 'lost' };

/**
 * Submits content to PT Sandbox and polls for its verdict, at most once per content however many
 * callers and processes ask: in this process a shared promise, across processes and restarts the
 * pt_task row (claim, then scan_id). Tasks in flight are capped; more wait in order.
 */
export class TaskRunner {
  private readonly running = new Map<string, Promise<Finding>>();
  private readonly slots: Semaphore;
  private readonly now: () => number;
  private readonly cfg: PtSandboxConfig;

  constructor(private readonly o: TaskRunnerOptions) {
    this.cfg = o.config;
    this.now = o.now ?? Date.now;
    this.slots = new Semaphore(o.config.maxInflight);
  }

  /** Tasks submitted by this process and not yet finished; and callers waiting for a slot. */
  get inflight(): { active: number; waiting: number } {
    return { active: this.slots.inUse, waiting: this.slots.pending };
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
      const { task, release } = obtained;
      const tlog = log.child({ scanId: task.scanId });
      let outcome: PollOutcome;
      try {
        outcome = await this.poll(item, task, signal, tlog);
      } finally {
        release?.();
      }
      if (outcome.kind === 'done') return outcome.finding;
      this.o.store.remove(item.key, this.o.settingsFingerprint, task.scanId);
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

  /** A task to poll: resumed from the pt_task table, or claimed and submitted here. */
  private async obtain(
    item: TaskItem,
    signal: AbortSignal,
    deadline: number,
    log: Logger,
  ): Promise<{ task: Task; release?: () => void } | { finding: Finding }> {
    const fp = this.o.settingsFingerprint;
    const claimTimeoutMs = this.cfg.requestTimeout * this.cfg.retries.attempts * 2 + this.cfg.connectTimeout;
    let waitMs = 50;
    for (;;) {
      if (signal.aborted) return { finding: abortedFinding() };
      const claim = this.o.store.claim(item.key, fp, {
        mode: this.cfg.mode,
        owner: this.o.owner,
        now: this.now(),
        maxTaskAgeMs: this.cfg.maxTaskAge,
        claimTimeoutMs,
      });
      if (!claim.claimed && claim.task.scanId !== undefined) {
        const task: Task = {
          scanId: claim.task.scanId,
          mode: claim.task.mode === 'source' ? 'source' : 'analysis',
          submittedAt: claim.task.submittedAt,
          resumed: true,
        };
        log.info(
          { event: 'pt.task_resumed', scanId: task.scanId, ageMs: this.now() - task.submittedAt },
          'PT Sandbox task already in flight; polling it',
        );
        return { task };
      }
      if (!claim.claimed) {
        // Another process is uploading the same content: wait for its scan_id.
        await sleep(waitMs, undefined, { signal }).catch(() => undefined);
        waitMs = Math.min(waitMs * 2, 1000);
        continue;
      }
      let release: () => void;
      try {
        release = await this.slots.acquire(signal);
      } catch {
        this.o.store.release(item.key, fp, this.o.owner);
        return { finding: abortedFinding() };
      }
      try {
        const scanId = await this.submit(item, signal, deadline, log);
        const now = this.now();
        this.o.store.setScanId(item.key, fp, this.o.owner, scanId, now);
        log.info(
          { event: 'pt.task_submitted', scanId, mode: this.cfg.mode, bytes: item.size },
          'submitted to PT Sandbox',
        );
        return { task: { scanId, mode: this.cfg.mode, submittedAt: now, resumed: false }, release };
      } catch (err) {
        release();
        this.o.store.release(item.key, fp, this.o.owner);
        return { finding: this.failure(err, log) };
      }
    }
  }

  /** Uploads and creates the task; retries transient failures (5xx, connection) until the deadline. */
  private async submit(item: TaskItem, signal: AbortSignal, deadline: number, log: Logger): Promise<string> {
    const perTry =
      this.cfg.requestTimeout * this.cfg.retries.attempts +
      this.cfg.retries.backoff * this.cfg.retries.attempts;
    for (let round = 1; ; round++) {
      try {
        return await item.withBody((body) => this.submitOnce(item, body, signal, this.now() + perTry));
      } catch (err) {
        const wait = this.cfg.retries.backoff * round;
        const transient = isSandgateError(err) && err.details.retryable === true;
        if (!transient || signal.aborted || this.now() + wait >= deadline) throw err;
        log.warn(
          { event: 'pt.submit_retry', round, waitMs: wait, err: errSummary(err) },
          'PT Sandbox submission failed, retrying',
        );
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  private async submitOnce(
    item: TaskItem,
    body: BodySource,
    signal: AbortSignal,
    until: number,
  ): Promise<string> {
    const { client } = this.o;
    const call = { signal, until };
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

  private async poll(item: TaskItem, task: Task, signal: AbortSignal, log: Logger): Promise<PollOutcome> {
    const { polling } = this.cfg;
    const fp = this.o.settingsFingerprint;
    let next = task.resumed ? this.now() : task.submittedAt + polling.firstDelay;
    for (;;) {
      const wait = next - this.now();
      if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => undefined);
      if (signal.aborted) return { kind: 'done', finding: abortedFinding(task.scanId) };
      const age = this.now() - task.submittedAt;
      if (age > this.cfg.maxTaskAge) {
        this.o.store.remove(item.key, fp, task.scanId);
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
      next = this.now() + (age >= polling.slowAfter ? polling.slowInterval : polling.interval);
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
      this.o.store.touch(item.key, fp, this.now());
      const result = status.result;
      if (result === undefined) continue;
      if (status.is_preflight === true) {
        if (result.verdict?.toUpperCase() !== 'DANGEROUS') continue;
        log.info(
          { event: 'pt.preflight_dangerous' },
          'PT Sandbox preflight result is DANGEROUS; not waiting for the rest',
        );
      }
      const finding = await this.conclude(task, result, status.is_preflight === true, signal, log);
      if (status.is_preflight !== true) this.o.store.remove(item.key, fp, task.scanId);
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
