import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Every metric sandgate exports, defined once; front ends expose `registry` on /metrics. */
export interface Metrics {
  readonly registry: Registry;
  /** Messages by final action and reason (clean, malicious, failure:timeout, window-expired:..., bypass:..., marked). */
  readonly messages: Counter<'front_end' | 'action' | 'reason'>;
  readonly messageSeconds: Histogram<'front_end'>;
  readonly scannerOutcomes: Counter<'scanner' | 'outcome' | 'reason'>;
  readonly scannerSeconds: Histogram<'scanner'>;
  readonly cacheHits: Counter<'scanner'>;
  /** Scans answered by another caller's identical scan: in this process, or in another process via the state database. */
  readonly singleFlightJoins: Counter<'scanner' | 'scope'>;
  /** Verdict cache or lease operations that failed (state backend down or slow): scanned without them. */
  readonly stateFallbacks: Counter<'op'>;
  /** Messages delivered unscanned because the operator chose fail-open. */
  readonly failOpen: Counter<'reason'>;
  /** Messages that skipped scanning because a bypass list matched. */
  readonly bypass: Counter<'list'>;
  /** Monitor mode: the action that would have applied. */
  readonly monitorWouldBe: Counter<'action'>;
  readonly quarantineWrites: Counter<'result'>;
  readonly marks: Counter<'result'>;
  /** Info-style: 1 for the version each scanner is known to run (PT Sandbox, clamd, ICAP). */
  readonly scannerVersion: Gauge<'scanner' | 'version'>;
  /** Version lookups by result (ok, failed): one at a time per scanner and process. */
  readonly scannerVersionLookups: Counter<'scanner' | 'result'>;
  /** PT Sandbox tasks this process submitted and is polling (the in-flight window's use). */
  readonly ptInflight: Gauge;
  /** PT Sandbox submissions waiting in this process for a slot of the window. */
  readonly ptWaiting: Gauge;
  /** The in-flight window: how many tasks this process may have in flight now. */
  readonly ptWindow: Gauge;
  /** PT Sandbox tasks created (rate: submitted/s). */
  readonly ptSubmitted: Counter;
  readonly ptAdopted: Counter;
  /** Submissions the appliance refused with 429 or 503 (retried later within the deadline). */
  readonly ptRefused: Counter<'status'>;
  /** Window decreases by cause (refused: 429/503; age: task age grew). */
  readonly ptBackoffs: Counter<'cause'>;
  /** Age of PT Sandbox tasks when their result was seen (submission to verdict). */
  readonly ptTaskAge: Histogram;
}

export function createMetrics(options: { prefix?: string; defaultMetrics?: boolean } = {}): Metrics {
  const p = options.prefix ?? 'sandgate_';
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: p });
  const registers = [registry];
  return {
    registry,
    messages: new Counter({
      name: `${p}messages_total`,
      help: 'Messages by front end, action and reason',
      labelNames: ['front_end', 'action', 'reason'],
      registers,
    }),
    messageSeconds: new Histogram({
      name: `${p}message_seconds`,
      help: 'Time to a decision per message',
      labelNames: ['front_end'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers,
    }),
    scannerOutcomes: new Counter({
      name: `${p}scanner_outcomes_total`,
      help: 'Scanner outcomes (clean, suspicious, malicious, skipped, failed) with the failure or skip reason',
      labelNames: ['scanner', 'outcome', 'reason'],
      registers,
    }),
    scannerSeconds: new Histogram({
      name: `${p}scanner_seconds`,
      help: 'Scanner latency, cache hits included',
      labelNames: ['scanner'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600],
      registers,
    }),
    cacheHits: new Counter({
      name: `${p}cache_hits_total`,
      help: 'Verdicts answered from the verdict cache',
      labelNames: ['scanner'],
      registers,
    }),
    singleFlightJoins: new Counter({
      name: `${p}single_flight_joins_total`,
      help: 'Scans that joined an identical scan already running (scope: process or shared)',
      labelNames: ['scanner', 'scope'],
      registers,
    }),
    stateFallbacks: new Counter({
      name: `${p}state_fallbacks_total`,
      help: 'Verdict cache or lease operations that failed (op: cache_read, lease, wait); the scan went on in-process',
      labelNames: ['op'],
      registers,
    }),
    failOpen: new Counter({
      name: `${p}fail_open_total`,
      help: 'Messages delivered unscanned because the policy chose deliver for a failure',
      labelNames: ['reason'],
      registers,
    }),
    bypass: new Counter({
      name: `${p}bypass_total`,
      help: 'Messages that skipped scanning because a bypass list matched',
      labelNames: ['list'],
      registers,
    }),
    monitorWouldBe: new Counter({
      name: `${p}monitor_would_be_total`,
      help: 'Monitor mode: the action that enforce mode would have taken',
      labelNames: ['action'],
      registers,
    }),
    quarantineWrites: new Counter({
      name: `${p}quarantine_writes_total`,
      help: 'Quarantine writes by result (ok, error)',
      labelNames: ['result'],
      registers,
    }),
    marks: new Counter({
      name: `${p}marks_total`,
      help: 'Inbound X-Sandgate-Mark headers by check result (ok, syntax, mac, expired, future)',
      labelNames: ['result'],
      registers,
    }),
    scannerVersion: new Gauge({
      name: `${p}scanner_version_info`,
      help: 'The version each scanner is known to run (value 1; the version is the label)',
      labelNames: ['scanner', 'version'],
      registers,
    }),
    scannerVersionLookups: new Counter({
      name: `${p}scanner_version_lookups_total`,
      help: 'Scanner version lookups by result (ok, failed)',
      labelNames: ['scanner', 'result'],
      registers,
    }),
    ptInflight: new Gauge({
      name: `${p}pt_tasks_inflight`,
      help: 'PT Sandbox tasks this process submitted and has not seen finish',
      registers,
    }),
    ptWaiting: new Gauge({
      name: `${p}pt_submissions_waiting`,
      help: 'PT Sandbox submissions waiting in this process for a slot of the in-flight window',
      registers,
    }),
    ptWindow: new Gauge({
      name: `${p}pt_inflight_window`,
      help: 'PT Sandbox tasks this process may have in flight now (adaptive window)',
      registers,
    }),
    ptSubmitted: new Counter({
      name: `${p}pt_tasks_submitted_total`,
      help: 'PT Sandbox tasks created',
      registers,
    }),
    ptAdopted: new Counter({
      name: `${p}pt_tasks_adopted_total`,
      help: 'PT Sandbox tasks adopted from a process that stopped renewing its lease (died)',
      registers,
    }),
    ptRefused: new Counter({
      name: `${p}pt_submissions_refused_total`,
      help: 'PT Sandbox submissions refused with 429 or 503 (retried later within the deadline)',
      labelNames: ['status'],
      registers,
    }),
    ptBackoffs: new Counter({
      name: `${p}pt_window_decreases_total`,
      help: 'Decreases of the PT Sandbox in-flight window by cause (refused, age)',
      labelNames: ['cause'],
      registers,
    }),
    ptTaskAge: new Histogram({
      name: `${p}pt_task_age_seconds`,
      help: 'Age of PT Sandbox tasks when their result was seen (from submission)',
      buckets: [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600, 900],
      registers,
    }),
  };
}
