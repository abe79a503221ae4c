import { Counter, Gauge, type Registry } from 'prom-client';
import type { NextHop, RelayConfig } from '../../config/relay.js';
import type { Evaluator } from '../../core/evaluation.js';
import type { Logger } from '../../core/logger.js';
import type { QuarantineWriter, RelayQueueStore } from '../../core/ports.js';
import { InlineRelay } from '../../smtp/inline.js';
import { QueueIntake } from '../../smtp/queue/intake.js';
import { QueueRelay } from '../../smtp/queue/queue-relay.js';
import { QueueWorker } from '../../smtp/queue/worker.js';
import type { RelayDataHandler } from '../../smtp/relay-data.js';
import { RelayServer } from '../../smtp/server.js';
import { SessionPool } from '../../smtp/session-pool.js';
import { readConfiguredFile } from '../config-files.js';
import { buildConnector } from './delivery.js';

export interface RelayParts {
  readonly server: RelayServer;
  /** Queue mode only: the durable queue and its worker. */
  readonly queue?: QueueMode;
}

export interface RelayBuild {
  readonly relay: RelayConfig;
  /** relay.nextHop, a directory already resolved against the working directory. */
  readonly nextHop: NextHop;
  readonly evaluator: Evaluator;
  /** Queue mode keeps blocked mail here when the core kept no copy (required in queue mode). */
  readonly quarantine?: QuarantineWriter;
  readonly log: Logger;
  /** Queue mode: the state's relay queue (required in queue mode); its owner closes the state. */
  readonly queueStore?: RelayQueueStore;
  /** Where incoming messages are spooled. */
  readonly spoolDir: string;
  readonly maxMessageSize: number;
  readonly memorySpoolThreshold: number;
  /** Queue gauges and counters are registered here (the /metrics registry). */
  readonly registry?: Registry;
  readonly metricsPrefix?: string;
  /** Tests: a faster worker poll. */
  readonly pollMs?: number;
}

/**
 * The relay and everything it is built from: the next-hop connector (its CA and password read
 * here), the inbound TLS key and certificate, and either the inline handler (lockstep with the
 * next hop) or queue mode (its store, worker and session pool). Queue mode builds no inline
 * machinery, and inline mode no queue.
 */
export function buildRelay(b: RelayBuild): RelayParts {
  const { relay, log } = b;
  const connector = buildConnector(b.nextHop, relay.nextHopOptions, {
    hostname: relay.hostname,
    key: 'relay.nextHopOptions',
    log,
  });
  let handler: RelayDataHandler;
  let queue: QueueMode | undefined;
  if (relay.mode === 'queue') {
    queue = createQueueMode(b, connector);
    handler = new QueueRelay(queue.intake, relay, connector.describe);
  } else {
    handler = new InlineRelay({ relay, evaluator: b.evaluator, connector, log });
  }
  const { certFile, keyFile } = relay.tls;
  const tls =
    certFile !== undefined && keyFile !== undefined
      ? {
          cert: readConfiguredFile(certFile, 'relay.tls.certFile'),
          key: readConfiguredFile(keyFile, 'relay.tls.keyFile'),
        }
      : undefined;
  const server = new RelayServer({
    relay,
    handler,
    log,
    spoolDir: b.spoolDir,
    maxMessageSize: b.maxMessageSize,
    memorySpoolThreshold: b.memorySpoolThreshold,
    ...(tls !== undefined ? { tls } : {}),
  });
  return { server, ...(queue !== undefined ? { queue } : {}) };
}

export interface QueueMode {
  readonly store: RelayQueueStore;
  readonly intake: QueueIntake;
  readonly worker: QueueWorker;
  /** Recovers the spool (files without rows, rows without files) and starts delivering. */
  start(): Promise<void>;
  /** Stops the worker (items in progress get `timeoutMs`); the store stays open (the state's owner closes it). */
  close(timeoutMs: number): Promise<void>;
}

/** Queue mode: its store, intake, worker and metrics. */
function createQueueMode(b: RelayBuild, connector: ReturnType<typeof buildConnector>): QueueMode {
  const { relay, log, quarantine } = b;
  const store = b.queueStore;
  if (quarantine === undefined || store === undefined) {
    throw new Error('queue mode needs the quarantine writer and the queue store');
  }
  const q = relay.queue;
  const pool = new SessionPool(connector, Math.max(1000, Math.min(relay.nextHopOptions.keepAlive, 30_000)));
  const qlog = log.child({ component: 'queue' });
  const worker = new QueueWorker({
    store,
    evaluator: b.evaluator,
    quarantine,
    pool,
    config: q,
    hostname: relay.hostname,
    nextHop: connector.describe,
    log: qlog,
    ...(b.pollMs !== undefined ? { pollMs: b.pollMs } : {}),
  });
  const intake = new QueueIntake(store, q, () => worker.wake(), qlog);
  if (b.registry) registerQueueMetrics(b.registry, b.metricsPrefix ?? 'sandgate_', store, worker);
  let started = false;
  return {
    store,
    intake,
    worker,
    async start() {
      if (started) return;
      started = true;
      const r = await store.recover();
      if (r.removedFiles > 0 || r.removedRows.length > 0 || r.indexed.length > 0) {
        log.warn(
          {
            event: 'queue.recovered',
            removedFiles: r.removedFiles,
            indexed: r.indexed,
            removedRows: r.removedRows,
          },
          'repaired the relay queue after an unclean stop',
        );
      }
      const s = await store.stats();
      log.info({ event: 'queue.resumed', messages: s.messages, bytes: s.bytes }, 'relay queue resumed');
      worker.start();
    },
    async close(timeoutMs) {
      await worker.stop(timeoutMs);
    },
  };
}

/** Queue depth, bytes and oldest age as gauges (read at scrape time), outcomes as a counter. */
export function registerQueueMetrics(
  registry: Registry,
  prefix: string,
  store: RelayQueueStore,
  worker: QueueWorker,
): void {
  const registers = [registry];
  new Gauge({
    name: `${prefix}relay_queue_messages`,
    help: 'Messages in the relay queue (queue mode)',
    registers,
    async collect() {
      this.set((await store.refreshCounters()).messages);
    },
  });
  new Gauge({
    name: `${prefix}relay_queue_bytes`,
    help: 'Bytes of messages in the relay queue (queue mode)',
    registers,
    collect() {
      this.set(store.load.bytes);
    },
  });
  new Gauge({
    name: `${prefix}relay_queue_oldest_seconds`,
    help: 'Age of the oldest message in the relay queue, 0 when empty',
    registers,
    async collect() {
      const oldest = (await store.stats()).oldest;
      this.set(oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
    },
  });
  const outcomes = new Counter({
    name: `${prefix}relay_queue_outcomes_total`,
    help: 'Relay queue attempts by outcome (delivered, deferred, bounced, quarantined, failed)',
    labelNames: ['outcome'],
    registers,
  });
  worker.on('outcome', (e) => outcomes.inc({ outcome: e.outcome }));
}
