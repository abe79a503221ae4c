import { createHash } from 'node:crypto';
import type { PtSandboxConfig } from '../../config/pt-sandbox.js';
import { analyseMessage } from '../../core/content-key.js';
import { isSandgateError, SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import type { MessageSource } from '../../core/message.js';
import { worstFinding, type Finding } from '../../core/outcome.js';
import { cpuOf, type ScanContext, type Scanner } from '../../core/scanner.js';
import { failureFromError } from '../../core/verdict-memo.js';
import type { PtSandboxClient } from './client.js';
import { surveyMessage, withAttachment, type AttachmentInfo, type MessageSurvey } from './content-scan.js';
import { renderFileName, subjectForFileName, templateNeedsSubject } from './file-name.js';
import { normaliseMessage } from './normalise.js';
import type { PtTaskStore } from '../../core/ports.js';
import { TaskRunner, type LoadPort, type TaskItem } from './task-runner.js';

export interface PtSandboxScannerOptions {
  readonly config: PtSandboxConfig;
  readonly client: PtSandboxClient;
  /** Tasks in flight (the state's PtTaskStore); shared by processes on the same state. */
  readonly tasks: PtTaskStore;
  readonly log: Logger;
  /** Identifies this process in the pt_task table. */
  readonly owner: string;
  /** Fingerprint of the API token (secretFingerprint(token, 'pt-sandbox-token')): binds tasks to it. */
  readonly tokenFingerprint: string;
  /**
   * Where the MIME walker spools big parts (attachments mode, prefilter): `<stateDir>/spool/...`,
   * so that the start-up sweep finds what a killed process left there.
   */
  readonly spoolDir: string;
  readonly metrics?: Metrics;
  /** Where the window and queue of this process are reported for `sandbox health --watch`. */
  readonly load?: LoadPort;
  readonly frontEnd?: string;
  readonly now?: () => number;
}

/** Bumped when what the sandbox is given for the same content changes (the normalised copy). */
const SUBMISSION_SCHEME = 2;

/**
 * PT Sandbox behind the Scanner port. Message granularity submits the whole .eml; attachments
 * granularity submits each distinct top-level attachment once (ctx.memo), and a message whose
 * bodies carry links as a normalised copy without its per-recipient header fields (normalise.ts),
 * so 300 copies of one newsletter are one task; it answers with the worst. Tasks are submitted
 * once per content and settings (TaskRunner + pt_task table). The MIME walk and hashing take a CPU
 * slot (ctx.cpu); waiting for the appliance holds none.
 */
export class PtSandboxScanner implements Scanner {
  readonly name = 'pt-sandbox';
  readonly backgroundMs: number;
  readonly cleanTtlCapMs: number;
  /** Hash of the settings that change the verdict; keys the pt_task table. */
  readonly settingsFingerprint: string;
  private readonly runner: TaskRunner;
  private readonly cfg: PtSandboxConfig;
  private readonly spoolDir: string;

  constructor(private readonly o: PtSandboxScannerOptions) {
    this.cfg = o.config;
    this.backgroundMs = o.config.maxTaskAge;
    this.cleanTtlCapMs = o.config.cleanTtlCap;
    this.spoolDir = o.spoolDir;
    const a = o.config.analysis;
    this.settingsFingerprint = createHash('sha256')
      .update(
        JSON.stringify({
          scheme: SUBMISSION_SCHEME,
          url: o.config.url ?? '',
          mode: o.config.mode,
          depth: a.depth,
          passwords: a.passwordsForUnpack,
          urlExtract: a.urlExtract,
          cache: a.cacheEnabled,
          sandbox: a.sandbox,
          preflight: o.config.allowPreflight,
        }),
      )
      .digest('hex')
      .slice(0, 16);
    this.runner = new TaskRunner({
      config: o.config,
      client: o.client,
      store: o.tasks,
      settingsFingerprint: this.settingsFingerprint,
      owner: o.owner,
      tokenFingerprint: o.tokenFingerprint,
      log: o.log,
      ...(o.metrics ? { metrics: o.metrics } : {}),
      ...(o.load ? { load: o.load } : {}),
      ...(o.frontEnd ? { frontEnd: o.frontEnd } : {}),
      ...(o.now ? { now: o.now } : {}),
    });
  }

  /** Tasks this process has in flight, callers waiting for a slot, and the window. */
  get inflight(): { active: number; waiting: number; limit: number } {
    return this.runner.inflight;
  }

  /**
   * Granularity and the settings that change the analysis. Not the appliance's version: that is
   * version(), stored with each verdict; staleness is bounded by cleanTtlCap.
   */
  fingerprint(): Promise<string> {
    const links = this.cfg.granularity === 'attachments' && this.cfg.linksAsMessage ? '/links' : '';
    return Promise.resolve(`pt-sandbox/${this.cfg.granularity}${links}/${this.settingsFingerprint}`);
  }

  /** The appliance's version (maintenance/getVersion), within 5 s. */
  async version(signal: AbortSignal): Promise<string> {
    const v = await this.o.client.getVersion({
      signal,
      until: Date.now() + Math.min(this.cfg.requestTimeout, 5000),
    });
    return v.version;
  }

  async scan(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    const release = message.retain?.();
    try {
      return await this.scanRetained(message, ctx);
    } catch (err) {
      return failureFromError(err);
    } finally {
      release?.();
    }
  }

  /**
   * The start-up check that this process can read the tasks it may adopt: a report can only be read
   * with the token that created the task, so when running processes on this state poll tasks made
   * with another token (their leases run), this process refuses to start (ERR_PT_TOKEN_MISMATCH).
   * Tasks left by processes that stopped are not adopted but submitted again (the claim takes them
   * over), so a token rotated on every node needs no clean-up.
   */
  async start(): Promise<void> {
    const now = this.o.now?.() ?? Date.now();
    const ours = this.o.tokenFingerprint;
    const others = (await this.o.tasks.tokenFingerprints(now - this.cfg.maxTaskAge, now)).filter(
      (t) => t.tokenFingerprint !== ours,
    );
    const first = others[0];
    if (first === undefined) return;
    const key =
      this.cfg.tokenFile !== undefined
        ? 'scanners.ptSandbox.tokenFile'
        : `scanners.ptSandbox.tokenEnv (${this.cfg.tokenEnv})`;
    this.o.log.error(
      { event: 'pt.token_mismatch', fingerprint: ours, stored: first.tokenFingerprint, tasks: first.tasks },
      'the PT Sandbox token differs from the one of tasks that running processes on this state poll',
    );
    throw new SandgateError(
      'ERR_PT_TOKEN_MISMATCH',
      `${key}: this PT Sandbox token (fingerprint ${ours}) is not the one that created ${first.tasks} task(s) in flight by running processes on this state (fingerprint ${first.tokenFingerprint}); a report can only be read with the token that created the task, so every process and node sharing the state must use the same token (docs/cluster.md)`,
      {
        details: {
          key:
            this.cfg.tokenFile !== undefined ? 'scanners.ptSandbox.tokenFile' : 'scanners.ptSandbox.tokenEnv',
          fingerprint: ours,
          stored: first.tokenFingerprint,
          tasks: first.tasks,
        },
      },
    );
  }

  async close(): Promise<void> {
    await this.runner.close();
    await this.o.client.close();
  }

  private async scanRetained(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    const cfg = this.cfg;
    const log = ctx.log;
    const needSurvey = cfg.granularity === 'attachments' || cfg.prefilter.enabled;
    let survey: MessageSurvey | undefined;
    if (needSurvey) {
      try {
        survey = await cpuOf(ctx).run(() => surveyMessage(message, cfg, this.spoolDir, ctx.signal));
      } catch (err) {
        if (isSandgateError(err, 'ERR_ABORTED')) return failureFromError(err);
        log.warn(
          { event: 'pt.walk_failed', code: isSandgateError(err) ? err.code : 'error' },
          'cannot walk the message; submitting it whole',
        );
      }
      if (survey?.summary.limit !== undefined) {
        log.warn(
          { event: 'pt.walk_limit', limit: survey.summary.limit.kind },
          'walk limit reached; submitting the message whole',
        );
        survey = undefined;
      }
    }

    if (survey === undefined) return this.scanWhole(message, ctx);

    const candidates =
      cfg.granularity === 'attachments'
        ? survey.attachments.filter((a) => !cfg.prefilter.enabled || a.risky)
        : [];
    const sendWhole =
      cfg.granularity === 'message'
        ? survey.attachments.some((a) => a.risky) || (cfg.prefilter.links && survey.links)
        : cfg.linksAsMessage && survey.links && (!cfg.prefilter.enabled || cfg.prefilter.links);
    if (!sendWhole && candidates.length === 0) {
      log.debug(
        { event: 'pt.prefilter_skip', attachments: survey.attachments.length, links: survey.links },
        'nothing for the sandbox',
      );
      return { kind: 'skipped', reason: cfg.prefilter.enabled ? 'prefilter' : 'not-applicable' };
    }

    const work: Promise<Finding>[] = candidates.map((a) => this.memoAttachment(message, a, ctx));
    if (sendWhole) {
      work.push(
        cfg.granularity === 'attachments' ? this.scanNormalised(message, ctx) : this.scanWhole(message, ctx),
      );
    }
    const findings = await Promise.all(work);
    const worst = worstFinding(findings) ?? { kind: 'skipped', reason: 'not-applicable' };
    // A partial verdict anywhere makes a clean answer partial.
    if (worst.kind === 'clean' && findings.some((f) => f.kind === 'clean' && f.partial === true)) {
      return { ...worst, partial: true };
    }
    return worst;
  }

  private async scanWhole(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    const cfg = this.cfg;
    if (message.size > cfg.maxUploadSize) {
      return {
        kind: 'failed',
        reason: 'too-large',
        message: `the message (${message.size} bytes) is over scanners.ptSandbox.maxUploadSize (${cfg.maxUploadSize})`,
      };
    }
    const analysis = await cpuOf(ctx).run(() => analyseMessage(message));
    const subject = templateNeedsSubject(cfg.fileNameTemplate)
      ? subjectForFileName(analysis.headers.find((h) => h.name === 'subject')?.value ?? '')
      : undefined;
    const item: TaskItem = {
      key: `msg:${analysis.contentKey}`,
      size: message.size,
      fileName: renderFileName(cfg.fileNameTemplate, { msgId: message.msgId, subject }),
      withBody: (fn) => fn({ length: message.size, open: () => message.open() }),
    };
    return this.runner.run(item, ctx.signal, ctx.deadline, ctx.log);
  }

  /**
   * Attachments granularity, a message whose bodies carry links: submitted as its normalised copy
   * (the body and the header fields a newsletter has the same for every recipient: normalise.ts),
   * through ctx.memo under that copy's key, so identical newsletters to many recipients are
   * analysed once across messages and processes.
   */
  private async scanNormalised(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    const cfg = this.cfg;
    const normalised = await cpuOf(ctx).run(() => normaliseMessage(message));
    if (normalised.size > cfg.maxUploadSize) {
      return {
        kind: 'failed',
        reason: 'too-large',
        message: `the message (${normalised.size} bytes without per-recipient fields) is over scanners.ptSandbox.maxUploadSize (${cfg.maxUploadSize})`,
      };
    }
    const subject =
      templateNeedsSubject(cfg.fileNameTemplate) && normalised.subject !== undefined
        ? subjectForFileName(normalised.subject)
        : undefined;
    const item: TaskItem = {
      key: `nmsg:${normalised.key}`,
      size: normalised.size,
      fileName: renderFileName(cfg.fileNameTemplate, { msgId: message.msgId, subject }),
      withBody: (fn) => fn({ length: normalised.size, open: () => normalised.open() }),
    };
    return this.memoRetained(message, `nmsg:${normalised.key}`, ctx, () =>
      this.runner.run(item, ctx.signal, ctx.deadline, ctx.log),
    );
  }

  /**
   * One attachment through ctx.memo (analysed once across messages and processes). The memo may
   * answer at the deadline while the analysis goes on: the message bytes stay retained until the
   * analysis ends, or until the background limit if it never started.
   */
  private memoAttachment(message: MessageSource, a: AttachmentInfo, ctx: ScanContext): Promise<Finding> {
    return this.memoRetained(message, a.sha256, ctx, () => this.scanAttachment(message, a, ctx));
  }

  /** Runs `scan` through ctx.memo under `key`, keeping the message's bytes until it ends (see memoAttachment). */
  private memoRetained(
    message: MessageSource,
    key: string,
    ctx: ScanContext,
    scan: () => Promise<Finding>,
  ): Promise<Finding> {
    const retained = message.retain?.();
    let released = false;
    let started = false;
    const release = () => {
      if (released) return;
      released = true;
      ctx.signal.removeEventListener('abort', onAbort);
      retained?.();
    };
    const onAbort = () => {
      if (!started) release();
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const result = ctx.memo.run(key, async () => {
      started = true;
      try {
        return await scan();
      } finally {
        release();
      }
    });
    void result.then(
      (f) => {
        if (!started && !(f.kind === 'failed' && f.reason === 'timeout')) release();
      },
      () => {
        if (!started) release();
      },
    );
    return result;
  }

  private async scanAttachment(
    message: MessageSource,
    a: AttachmentInfo,
    ctx: ScanContext,
  ): Promise<Finding> {
    if (a.size > this.cfg.maxUploadSize) {
      return {
        kind: 'failed',
        reason: 'too-large',
        message: `attachment ${a.path} (${a.size} bytes) is over scanners.ptSandbox.maxUploadSize`,
      };
    }
    const fileName =
      a.filename !== undefined && a.filename.trim() !== '' ? a.filename : `${a.sha256.slice(0, 16)}.bin`;
    const item: TaskItem = {
      key: `part:${a.sha256}`,
      size: a.size,
      fileName: renderFileName(fileName, { msgId: message.msgId }),
      // The walk to the part takes a CPU slot; the upload, inside fn, does not.
      withBody: async (fn) => {
        let cpu: (() => void) | undefined = await cpuOf(ctx).acquire();
        try {
          return await withAttachment(message, a, this.spoolDir, (part) => {
            cpu?.();
            cpu = undefined;
            return fn({ length: part.size, open: () => part.open() });
          });
        } finally {
          cpu?.();
        }
      },
    };
    return this.runner.run(item, ctx.signal, ctx.deadline, ctx.log.child({ part: a.path }));
  }
}
