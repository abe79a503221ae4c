import { join } from 'node:path';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../core/logger.js';
import type {
  ClusterStore,
  MailDelivery,
  QuarantineStore,
  QuarantineWriter,
  StatePorts,
} from '../../core/ports.js';
import { processOwner } from '../owner.js';
import { NotifyingQuarantine } from '../../quarantine/notify.js';
import { RetentionJob } from '../../quarantine/retention.js';
import { QuarantineService } from '../../quarantine/service.js';
import { buildDelivery } from './delivery.js';

/** What the runtime hands out that the quarantine tools need. */
export interface QuarantineDeps {
  readonly config: Config;
  /** The quarantine and the allow list (release --allow-hash). */
  readonly state: Pick<StatePorts, 'quarantine' | 'allowList'>;
  readonly markKey: Buffer;
  readonly log: Logger;
  readonly spoolDir: string;
  readonly now?: () => number;
}

/** The release target's delivery (quarantine.release.*), or undefined when none is configured. */
export function releaseDelivery(config: Config, log: Logger): MailDelivery | undefined {
  const r = config.quarantine.release;
  if (r.target === undefined) return undefined;
  return buildDelivery(r.target, r, { hostname: r.hostname, key: 'quarantine.release', log });
}

export function createQuarantineService(deps: QuarantineDeps): QuarantineService {
  const delivery = releaseDelivery(deps.config, deps.log);
  return new QuarantineService({
    store: deps.state.quarantine,
    allowList: deps.state.allowList,
    markKey: deps.markKey,
    ...(delivery !== undefined ? { delivery } : {}),
    walk: {
      spoolDir: join(deps.spoolDir, 'quarantine'),
      limits: deps.config.scanners.rules.limits,
      memoryThreshold: deps.config.scanners.rules.memorySpoolThreshold,
    },
    previewMaxBytes: deps.config.scan.maxMessageSize,
    log: deps.log,
    ...(deps.now ? { now: deps.now } : {}),
  });
}

/**
 * The retention job, run once for every process on the state: each pass takes the cluster job
 * lease for 1.5 retention intervals (the process that ran the last pass keeps it; another takes
 * over when that one stops).
 */
export function createRetentionJob(deps: {
  readonly config: Config;
  readonly quarantine: QuarantineStore;
  readonly cluster: ClusterStore;
  readonly log: Logger;
}): RetentionJob {
  return new RetentionJob(
    deps.quarantine,
    { maxAgeMs: deps.config.quarantine.maxAge, maxTotalBytes: deps.config.quarantine.maxTotalSize },
    deps.log,
    {
      cluster: deps.cluster,
      owner: processOwner(),
      holdMs: Math.ceil(deps.config.quarantine.retentionInterval * 1.5),
    },
  );
}

/**
 * Wraps the quarantine writer with the administrator notice when quarantine.notify is enabled:
 * notices go to notify.target (default release.target) with release's TLS and AUTH options.
 */
export function withNotifications(
  writer: QuarantineWriter,
  config: Config,
  log: Logger,
): QuarantineWriter | NotifyingQuarantine {
  const n = config.quarantine.notify;
  const r = config.quarantine.release;
  const target = n.target ?? r.target;
  if (!n.enabled || n.to.length === 0 || target === undefined) return writer;
  const delivery = buildDelivery(target, r, { hostname: r.hostname, key: 'quarantine.notify', log });
  return new NotifyingQuarantine(
    writer,
    { to: n.to, from: n.from, ...(n.adminUrl !== undefined ? { adminUrl: n.adminUrl } : {}) },
    delivery,
    log,
  );
}
