import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PtSandboxConfig } from '../../core/config/pt-sandbox.js';
import { analyseMessage } from '../../core/content-key.js';
import { isSandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { MessageSource } from '../../core/message.js';
import { worstFinding, type Finding } from '../../core/outcome.js';
import type { ScanContext, Scanner } from '../../core/scanner.js';
import { failureFromError } from '../../core/verdict-memo.js';
import type { PtSandboxClient } from './client.js';
import { surveyMessage, withAttachment, type AttachmentInfo, type MessageSurvey } from './content-scan.js';
import { decodeEncodedWords, renderFileName, templateNeedsSubject } from './file-name.js';
import { TaskRunner, type TaskItem, type TaskStorePort } from './task-runner.js';

export interface PtSandboxScannerOptions {
  readonly config: PtSandboxConfig;
  readonly client: PtSandboxClient;
  /** The pt_task table (src/store/pt-tasks.ts); shared by processes on the same state database. */
  readonly tasks: TaskStorePort;
  readonly log: Logger;
  /** Identifies this process in the pt_task table. */
  readonly owner: string;
  /** Where the MIME walker spools big parts (attachments mode, prefilter). */
  readonly spoolDir?: string;
  readonly now?: () => number;
}

const VERSION_TTL_MS = 10 * 60_000;
const VERSION_RETRY_MS = 60_000;

/**
 * PT Sandbox behind the Scanner port. Message granularity submits the whole .eml; attachments
 * granularity submits each distinct top-level attachment once (ctx.memo) and answers with the
 * worst. Tasks are submitted once per content and settings (TaskRunner + pt_task table).
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
  private appliance: { value: string; until: number } | undefined;

  constructor(private readonly o: PtSandboxScannerOptions) {
    this.cfg = o.config;
    this.backgroundMs = o.config.maxTaskAge;
    this.cleanTtlCapMs = o.config.cleanTtlCap;
    this.spoolDir = o.spoolDir ?? join(tmpdir(), 'sandgate-pt-parts');
    const a = o.config.analysis;
    this.settingsFingerprint = createHash('sha256')
      .update(
        JSON.stringify({
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
      log: o.log,
      ...(o.now ? { now: o.now } : {}),
    });
  }

  /** Tasks this process has in flight, and callers waiting for a slot. */
  get inflight(): { active: number; waiting: number } {
    return this.runner.inflight;
  }

  /** Settings, granularity and the appliance's version (looked up every 10 minutes; 'unknown' while unreachable). */
  async fingerprint(signal: AbortSignal): Promise<string> {
    const now = Date.now();
    if (this.appliance === undefined || this.appliance.until <= now) {
      try {
        const v = await this.o.client.getVersion({
          signal,
          until: now + Math.min(this.cfg.requestTimeout, 5000),
        });
        this.appliance = { value: v.version, until: now + VERSION_TTL_MS };
      } catch (err) {
        this.o.log.warn(
          { event: 'pt.version_failed', code: isSandgateError(err) ? err.code : 'error' },
          'cannot read the PT Sandbox version',
        );
        this.appliance = { value: this.appliance?.value ?? 'unknown', until: now + VERSION_RETRY_MS };
      }
    }
    return `pt-sandbox/${this.appliance.value}/${this.cfg.granularity}/${this.settingsFingerprint}`;
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

  async close(): Promise<void> {
    await this.o.client.close();
  }

  private async scanRetained(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    const cfg = this.cfg;
    const log = ctx.log;
    const needSurvey = cfg.granularity === 'attachments' || cfg.prefilter.enabled;
    let survey: MessageSurvey | undefined;
    if (needSurvey) {
      try {
        survey = await surveyMessage(message, cfg, this.spoolDir, ctx.signal);
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
    if (sendWhole) work.push(this.scanWhole(message, ctx));
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
    const analysis = await analyseMessage(message);
    const subject = templateNeedsSubject(cfg.fileNameTemplate)
      ? decodeEncodedWords(utf8IfValid(analysis.headers.find((h) => h.name === 'subject')?.value ?? ''))
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
   * One attachment through ctx.memo (analysed once across messages and processes). The memo may
   * answer at the deadline while the analysis goes on: the message bytes stay retained until the
   * analysis ends, or until the background limit if it never started.
   */
  private memoAttachment(message: MessageSource, a: AttachmentInfo, ctx: ScanContext): Promise<Finding> {
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
    const result = ctx.memo.run(a.sha256, async () => {
      started = true;
      try {
        return await this.scanAttachment(message, a, ctx);
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
      withBody: (fn) =>
        withAttachment(message, a, this.spoolDir, (part) =>
          fn({ length: part.size, open: () => part.open() }),
        ),
    };
    return this.runner.run(item, ctx.signal, ctx.deadline, ctx.log.child({ part: a.path }));
  }
}

/** Header values arrive as latin1 text; raw 8-bit UTF-8 subjects are decoded as UTF-8 when valid. */
function utf8IfValid(latin1: string): string {
  const bytes = Buffer.from(latin1, 'latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return latin1;
  }
}
