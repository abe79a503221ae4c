import { join } from 'node:path';
import type { Config } from '../core/config/schema.js';
import type { Logger } from '../core/logger.js';
import type { QuarantineWriter } from '../core/ports.js';
import type { StateDb } from '../store/db.js';
import type { QuarantineStore } from '../store/quarantine-store.js';
import { SqliteAllowList } from './allow-list.js';
import { NotifyingQuarantine } from './notify.js';
import { RetentionJob } from './retention.js';
import { QuarantineService } from './service.js';

export { SqliteAllowList, type AllowList } from './allow-list.js';
export { QuarantineService } from './service.js';
export { RetentionJob } from './retention.js';
export { NotifyingQuarantine } from './notify.js';

/** What createRuntime hands out that the quarantine tools need. */
export interface QuarantineDeps {
  readonly config: Config;
  readonly db: StateDb;
  readonly quarantine: QuarantineStore;
  readonly markKey: Buffer;
  readonly log: Logger;
  readonly spoolDir: string;
  readonly now?: () => number;
}

export function createQuarantineService(deps: QuarantineDeps): QuarantineService {
  const q = deps.config.quarantine;
  return new QuarantineService({
    store: deps.quarantine,
    allowList: new SqliteAllowList(deps.db, deps.now),
    markKey: deps.markKey,
    release: q.release,
    walk: {
      spoolDir: join(deps.spoolDir, 'quarantine'),
      limits: deps.config.scanners.rules.limits,
      memoryThreshold: deps.config.scanners.rules.memorySpoolThreshold,
    },
    log: deps.log,
    ...(deps.now ? { now: deps.now } : {}),
  });
}

export function createRetentionJob(
  deps: Pick<QuarantineDeps, 'config' | 'quarantine' | 'log'>,
): RetentionJob {
  return new RetentionJob(
    deps.quarantine,
    { maxAgeMs: deps.config.quarantine.maxAge, maxTotalBytes: deps.config.quarantine.maxTotalSize },
    deps.log,
  );
}

/**
 * Wraps the quarantine writer with the administrator notice when quarantine.notify is enabled
 * (the composition root passes the result to the ScanService as its `quarantine`).
 */
export function withNotifications(
  writer: QuarantineWriter,
  config: Config,
  log: Logger,
): QuarantineWriter | NotifyingQuarantine {
  const n = config.quarantine.notify;
  const target = n.target ?? config.quarantine.release.target;
  if (!n.enabled || n.to.length === 0 || target === undefined) return writer;
  return new NotifyingQuarantine(
    writer,
    {
      to: n.to,
      from: n.from,
      target,
      ...(n.adminUrl !== undefined ? { adminUrl: n.adminUrl } : {}),
      hostname: config.quarantine.release.hostname,
      timeoutMs: config.quarantine.release.timeout,
    },
    log,
  );
}
