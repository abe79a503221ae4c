import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/logger.js';
import { createMetrics, type Metrics } from '../core/metrics.js';
import type { PolicyConfig } from '../core/policy.js';
import type { Scanner } from '../core/scanner.js';
import { ScanService } from '../core/scan-service.js';
import { ScannerVersions } from '../core/scanner-versions.js';
import { VerdictMemo } from '../core/verdict-memo.js';
import { openStateDb, type StateDb } from '../store/db.js';
import { QuarantineStore } from '../store/quarantine-store.js';
import { SqliteScannerVersionStore } from '../store/scanner-versions.js';
import { SqliteFirstFailureStore, SqliteInflightStore, SqliteVerdictStore } from '../store/verdict-store.js';
import { createRetentionJob, withNotifications } from './compose/quarantine.js';
import { createBypassMatcher } from './bypass.js';
import { loadOrCreateMarkKey } from './mark-key.js';
import { buildScanners } from './scanners.js';
import { sweepSpool } from './spool-sweep.js';

export interface Runtime {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly db: StateDb;
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

/** The composition root shared by every command: state, stores, scanners and the verdict core. */
export function createRuntime(config: Config, options: RuntimeOptions): Runtime {
  const log = options.log;
  const db = openStateDb(config.stateDir);
  const closers: Array<() => Promise<void> | void> = [
    () => {
      db.close();
    },
  ];
  try {
    const metrics = options.metrics ?? createMetrics({ prefix: config.metrics.prefix });
    const spoolDir = join(config.stateDir, 'spool');
    sweepSpool(config.stateDir, log);
    const markKey = loadOrCreateMarkKey(config.headers.markKeyFile ?? join(config.stateDir, 'mark.key'));
    const quarantine = new QuarantineStore(
      db,
      config.quarantine.dir ?? join(config.stateDir, 'quarantine'),
      options.now,
    );
    const repaired = quarantine.recover();
    if (repaired.indexed > 0 || repaired.removed > 0) {
      log.warn(
        { event: 'quarantine.recovered', ...repaired },
        'repaired the quarantine after an unclean stop',
      );
    }
    if (options.jobs) {
      const retention = createRetentionJob({ config, quarantine, log });
      retention.start(config.quarantine.retentionInterval);
      closers.unshift(() => retention.stop());
    }
    const writer = withNotifications(quarantine, config, log);
    if ('settle' in writer) closers.unshift(() => writer.settle());
    const scanners =
      options.scanners ?? buildScanners({ config, db, log, metrics, spoolDir, frontEnd: options.frontEnd });
    closers.unshift(...scanners.map((s) => () => s.close?.()));
    const shutdownController = new AbortController();
    const memo = new VerdictMemo({
      verdicts: new SqliteVerdictStore(db),
      inflight: new SqliteInflightStore(db),
      ttl: config.cache,
      owner: `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
      metrics,
      log,
      shutdown: shutdownController.signal,
      ...(options.now ? { now: options.now } : {}),
    });
    const bypass = createBypassMatcher(config.bypass);
    const firstFailures = new SqliteFirstFailureStore(db);
    const versions = new ScannerVersions({
      store: new SqliteScannerVersionStore(db),
      metrics,
      log,
      shutdown: shutdownController.signal,
      ...(options.now ? { now: options.now } : {}),
    });
    // Before the database closes (closers run in order; db.close is last): write waiting clears.
    closers.unshift(() => firstFailures.close());
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
      db,
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
    db.close();
    throw err;
  }
}
