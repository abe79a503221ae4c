import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/logger.js';
import { createMetrics, type Metrics } from '../core/metrics.js';
import type { PolicyConfig } from '../core/policy.js';
import type { Scanner } from '../core/scanner.js';
import { ScanService } from '../core/scan-service.js';
import { ScannerVersions } from '../core/scanner-versions.js';
import { VerdictMemo } from '../core/verdict-memo.js';
import type { QuarantineStore, StatePorts } from '../core/ports.js';
import { createRetentionJob, withNotifications } from './compose/quarantine.js';
import { openState } from './compose/state.js';
import { createBypassMatcher } from './bypass.js';
import { loadOrCreateMarkKey } from './mark-key.js';
import { checkMarkKey } from './cluster-checks.js';
import { processOwner } from './owner.js';
import { buildScanners } from './scanners.js';
import { sweepSpool } from './spool-sweep.js';

export interface Runtime {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Every state port (SQLite in stateDir); closed by close(). */
  readonly state: StatePorts;
  readonly evaluator: ScanService;
  readonly quarantine: QuarantineStore;
  readonly scanners: readonly Scanner[];
  readonly markKey: Buffer;
  /** Where front ends spool incoming messages. */
  readonly spoolDir: string;
  /** Aborted by close(): background scans stop. */
  readonly shutdown: AbortSignal;
  close(options?: { settle?: boolean }): Promise<void>;
}

export interface RuntimeOptions {
  readonly log: Logger;
  /** 'relay', 'helper', 'cli', ... in logs, metrics and quarantine items. */
  readonly frontEnd: string;
  /** Report-only: no quarantine copies (sandgate scan of a local file). */
  readonly reportOnly?: boolean;
  /** The front end writes the per-message summary line itself (relay.message, helper.reply). */
  readonly frontEndSummary?: boolean;
  /** Long-running front ends (relay, helper, admin) also run the quarantine retention job. */
  readonly jobs?: boolean;
  /** The command shows each inbound mark's check itself (sandgate scan): no mark.invalid log line. */
  readonly reportMarks?: boolean;
  /** Replaces the configured chain (tests, benchmarks). */
  readonly scanners?: readonly Scanner[];
  readonly metrics?: Metrics;
  readonly now?: () => number;
}

export function policyFromConfig(policy: Config['policy']): PolicyConfig {
  return {
    malicious: policy.malicious,
    suspicious: policy.suspicious,
    keepCopy: policy.keepCopy,
    partialClean: policy.partialClean,
    failure: policy.failure,
    tempfailWindowMs: policy.tempfailWindow,
    afterWindow: policy.afterWindow,
  };
}

/**
 * The composition root shared by every command: state, stores, scanners and the verdict core.
 * Async: the quarantine's start-up repair goes through the state port.
 */
export async function createRuntime(config: Config, options: RuntimeOptions): Promise<Runtime> {
  const log = options.log;
  const state = await openState(config, { log, ...(options.now ? { now: options.now } : {}) });
  // Run in order; the state closes last (it writes the batched first-failure clears first).
  const closers: Array<() => Promise<void> | void> = [() => state.close()];
  try {
    const metrics = options.metrics ?? createMetrics({ prefix: config.metrics.prefix });
    const spoolDir = join(config.stateDir, 'spool');
    sweepSpool(config.stateDir, log);
    const markKeyPath = config.headers.markKeyFile ?? join(config.stateDir, 'mark.key');
    const markKey = loadOrCreateMarkKey(markKeyPath);
    await checkMarkKey(state.cluster, markKey, { config, keyPath: markKeyPath, log });
    const quarantine = state.quarantine;
    const repaired = await quarantine.recover();
    if (repaired.indexed > 0 || repaired.removed > 0) {
      log.warn(
        { event: 'quarantine.recovered', ...repaired },
        'repaired the quarantine after an unclean stop',
      );
    }
    if (options.jobs) {
      const retention = createRetentionJob({ config, quarantine, cluster: state.cluster, log });
      retention.start(config.quarantine.retentionInterval);
      closers.unshift(() => retention.stop());
    }
    const writer = withNotifications(quarantine, config, log);
    if ('settle' in writer) closers.unshift(() => writer.settle());
    const scanners =
      options.scanners ??
      buildScanners({ config, state, log, metrics, spoolDir, frontEnd: options.frontEnd });
    closers.unshift(...scanners.map((s) => () => s.close?.()));
    for (const scanner of scanners) await scanner.start?.();
    const shutdownController = new AbortController();
    const memo = new VerdictMemo({
      verdicts: state.verdicts,
      inflight: state.inflight,
      ttl: config.cache,
      leaseMs: config.cache.lease,
      owner: processOwner(),
      metrics,
      log,
      shutdown: shutdownController.signal,
      ...(options.now ? { now: options.now } : {}),
    });
    const bypass = createBypassMatcher(config.bypass);
    const firstFailures = state.firstFailures;
    const versions = new ScannerVersions({
      store: state.scannerVersions,
      metrics,
      log,
      shutdown: shutdownController.signal,
      ...(options.now ? { now: options.now } : {}),
    });
    const evaluator = new ScanService({
      frontEnd: options.frontEnd,
      scanners,
      policy: policyFromConfig(config.policy),
      memo,
      firstFailures,
      ...(options.reportOnly ? {} : { quarantine: writer }),
      markKey,
      markMaxAgeMs: config.headers.markMaxAge,
      headersEnabled: config.headers.enabled,
      ...(bypass ? { bypass } : {}),
      mode: config.scan.mode,
      concurrency: config.scan.concurrency,
      maxMessageSize: config.scan.maxMessageSize,
      versions,
      metrics,
      log,
      logSummary: options.frontEndSummary !== true,
      ...(options.reportMarks ? { reportMarks: true } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
    let closed = false;
    return {
      config,
      log,
      metrics,
      state,
      evaluator,
      quarantine,
      scanners,
      markKey,
      spoolDir,
      shutdown: shutdownController.signal,
      async close(closeOptions = {}) {
        if (closed) return;
        closed = true;
        if (closeOptions.settle) await evaluator.settle();
        shutdownController.abort(new Error('sandgate is shutting down'));
        await evaluator.settle();
        for (const close of closers) await close();
      },
    };
  } catch (err) {
    for (const close of closers) await Promise.resolve(close()).catch(() => undefined);
    throw err;
  }
}
