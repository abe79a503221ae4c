/**
 * The Grafana dashboard and the Prometheus alerts name only metrics a running sandgate exports:
 * every `sandgate_*` name in packaging/grafana/sandgate.json, packaging/prometheus/alerts.yml and its
 * unit tests is compared with the /metrics of the built relay (queue mode, so the queue gauges
 * exist; the relay's registry holds the core's metrics too, the same ones the helper serves).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import {
  alertTestSeries,
  dashboardExprs,
  exposedNames,
  metricNames,
  ruleExprs,
} from '../support/monitoring.js';
import { startRelayProcess } from '../support/relay-process.js';
import { tempDir } from '../support/tmp.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function scrapeRelay(): Promise<string> {
  const dir = tempDir();
  const sink = await startSmtpSink();
  cleanups.push(() => sink.close());
  const configFile = join(dir, 'sandgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      stateDir: join(dir, 'state'),
      relay: { listen: '127.0.0.1:0', mode: 'queue', nextHop: `smtp://127.0.0.1:${sink.port}` },
      admin: { enabled: true, listen: '127.0.0.1:0' },
    }),
  );
  const relay = await startRelayProcess(configFile, true);
  cleanups.push(() => relay.stop());
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

describe('dashboard and alert metric names', () => {
  it('finds names in the dashboard, the alerts and the alert tests', () => {
    // Guards the extraction itself: an empty list would make the comparison below vacuous.
    expect(dashboardExprs().flatMap((e) => metricNames(e.expr)).length).toBeGreaterThan(20);
    expect(ruleExprs().flatMap((e) => metricNames(e.expr)).length).toBeGreaterThanOrEqual(6);
    expect(alertTestSeries().length).toBeGreaterThan(5);
    expect(exposedNames('# TYPE sandgate_x_seconds histogram\n# TYPE sandgate_y_total counter\n')).toEqual(
      new Set([
        'sandgate_x_seconds_bucket',
        'sandgate_x_seconds_sum',
        'sandgate_x_seconds_count',
        'sandgate_y_total',
      ]),
    );
  });

  it('uses only metrics that the running relay exports on /metrics', async () => {
    const exported = exposedNames(await scrapeRelay());
    expect(exported.has('sandgate_messages_total')).toBe(true);
    const used = [...dashboardExprs(), ...ruleExprs(), ...alertTestSeries()];
    const unknown = used.flatMap((u) =>
      metricNames(u.expr)
        .filter((n) => !exported.has(n))
        .map((n) => `${u.where}: ${n}`),
    );
    expect(unknown, 'metric names not exported by a running sandgate relay').toEqual([]);
  });
});
