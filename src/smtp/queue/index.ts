import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { NextHop, RelayConfig } from '../../config/relay.js';
import type { Evaluator } from '../../core/evaluation.js';
import type { Logger } from '../../core/logger.js';
import type { QuarantineWriter } from '../../core/ports.js';
import { openStateDb, type StateDb } from '../../store/db.js';
import { RelayQueueStore, type QueueFileWriter } from '../../store/relay-queue.js';
import { QueueIntake } from './intake.js';
import { queueConnector, SessionPool } from '../session-pool.js';
import { QueueWorker } from './worker.js';

export { QueueIntake, type QueueFrontEnd } from './intake.js';
export { QueueWorker, type QueueOutcome } from './worker.js';

export interface QueueModeOptions {
  readonly relay: RelayConfig;
  readonly stateDir: string;
  readonly nextHop: NextHop;
  readonly evaluator: Evaluator;
  readonly quarantine: QuarantineWriter;
  readonly log: Logger;
  /** Gauges (depth, bytes, oldest age) and counters are registered here (the /metrics registry). */
  readonly registry?: Registry;
  readonly metricsPrefix?: string;
  /** Tests: a failing writer at the store boundary. */
  readonly writer?: QueueFileWriter;
  readonly pollMs?: number;
}

export interface QueueMode {
  readonly store: RelayQueueStore;
  readonly intake: QueueIntake;
  readonly worker: QueueWorker;
  /** Recovers the spool (files without rows, rows without files) and starts delivering. */
  start(): void;
  /** Stops the worker (items in progress get `timeoutMs`), then closes the queue's database connection. */
  close(timeoutMs: number): Promise<void>;
}

/** The queue directory: relay.queue.dir, or <stateDir>/queue. */
export function queueDir(relay: RelayConfig, stateDir: string): string {
  return relay.queue.dir ?? join(stateDir, 'queue');
}

/** Opens the relay queue store on a database connection of its own. */
export function openQueueStore(
  relay: RelayConfig,
  stateDir: string,
  options: { writer?: QueueFileWriter } = {},
): { db: StateDb; store: RelayQueueStore } {
  const db = openStateDb(stateDir);
  try {
    return { db, store: new RelayQueueStore(db, queueDir(relay, stateDir), options) };
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Wires queue mode: store, intake (for the SMTP server), worker, metrics. */
export function createQueueMode(o: QueueModeOptions): QueueMode {
  const { db, store } = openQueueStore(o.relay, o.stateDir, o.writer ? { writer: o.writer } : {});
  const q = o.relay.queue;
  const connector = queueConnector(o.relay, o.nextHop);
  const pool = new SessionPool(connector, Math.max(1000, Math.min(o.relay.nextHopOptions.keepAlive, 30_000)));
  const worker = new QueueWorker({
    store,
    evaluator: o.evaluator,
    quarantine: o.quarantine,
    pool,
    config: q,
    hostname: o.relay.hostname,
    nextHop: connector.describe,
    log: o.log.child({ component: 'queue' }),
    ...(o.pollMs !== undefined ? { pollMs: o.pollMs } : {}),
  });
  const intake = new QueueIntake(store, q, () => worker.wake(), o.log.child({ component: 'queue' }));
  if (o.registry) registerQueueMetrics(o.registry, o.metricsPrefix ?? 'sandgate_', store, worker);
  let started = false;
  return {
    store,
    intake,
    worker,
    start() {
      if (started) return;
      started = true;
      const r = store.recover();
      if (r.removedFiles > 0 || r.removedRows.length > 0 || r.indexed.length > 0) {
        o.log.warn(
          {
            event: 'queue.recovered',
            removedFiles: r.removedFiles,
            indexed: r.indexed,
            removedRows: r.removedRows,
          },
          'repaired the relay queue after an unclean stop',
        );
      }
      const s = store.stats();
      o.log.info({ event: 'queue.resumed', messages: s.messages, bytes: s.bytes }, 'relay queue resumed');
      worker.start();
    },
    async close(timeoutMs) {
      await worker.stop(timeoutMs);
      db.close();
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
    collect() {
      this.set(store.refreshCounters().messages);
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
    collect() {
      const oldest = store.stats().oldest;
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
