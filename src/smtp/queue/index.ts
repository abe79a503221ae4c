import { Counter, Gauge, type Registry } from 'prom-client';
import type { NextHop, RelayConfig } from '../../config/relay.js';
import type { Evaluator } from '../../core/evaluation.js';
import type { Logger } from '../../core/logger.js';
import type { QuarantineWriter, RelayQueueStore } from '../../core/ports.js';
import { QueueIntake } from './intake.js';
import { queueConnector, SessionPool } from '../session-pool.js';
import { QueueWorker } from './worker.js';

export { QueueIntake, type QueueFrontEnd } from './intake.js';
export { QueueWorker, type QueueOutcome } from './worker.js';

export interface QueueModeOptions {
  readonly relay: RelayConfig;
  /** The queue (the state's RelayQueueStore); its owner closes it after close(). */
  readonly store: RelayQueueStore;
  readonly nextHop: NextHop;
  readonly evaluator: Evaluator;
  readonly quarantine: QuarantineWriter;
  readonly log: Logger;
  /** Gauges (depth, bytes, oldest age) and counters are registered here (the /metrics registry). */
  readonly registry?: Registry;
  readonly metricsPrefix?: string;
  readonly pollMs?: number;
}

export interface QueueMode {
  readonly store: RelayQueueStore;
  readonly intake: QueueIntake;
  readonly worker: QueueWorker;
  /** Recovers the spool (messages without rows, rows without messages) and starts delivering. */
  start(): Promise<void>;
  /** Stops the worker (items in progress get `timeoutMs`); the store stays open. */
  close(timeoutMs: number): Promise<void>;
}

/** Wires queue mode: intake (for the SMTP server), worker, metrics, on the given store. */
export function createQueueMode(o: QueueModeOptions): QueueMode {
  const store = o.store;
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
    async start() {
      if (started) return;
      started = true;
      const r = await store.recover();
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
      const s = await store.stats();
      o.log.info({ event: 'queue.resumed', messages: s.messages, bytes: s.bytes }, 'relay queue resumed');
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
