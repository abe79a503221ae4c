import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export const PACKAGING = join(import.meta.dirname, '..', '..', 'packaging');
export const DASHBOARD = join(PACKAGING, 'grafana', 'sandgate.json');
export const ALERTS = join(PACKAGING, 'prometheus', 'alerts.yml');
export const ALERT_TESTS = join(PACKAGING, 'prometheus', 'alerts.test.yml');

const NAME = /\bsandgate_[a-zA-Z0-9_]+/g;

/** Every `sandgate_*` name in a PromQL expression or series selector. */
export function metricNames(text: string): string[] {
  return [...text.matchAll(NAME)].map((m) => m[0]);
}

/** `expr` of every panel target of the Grafana dashboard (rows included), with the panel's title. */
export function dashboardExprs(file = DASHBOARD): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  const walk = (panels: unknown[]): void => {
    for (const p of panels as Array<{
      title?: string;
      targets?: Array<{ expr?: string }>;
      panels?: unknown[];
    }>) {
      for (const t of p.targets ?? [])
        if (t.expr !== undefined) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  const dash = JSON.parse(readFileSync(file, 'utf8')) as {
    panels: unknown[];
    templating?: { list: unknown[] };
  };
  walk(dash.panels);
  for (const v of (dash.templating?.list ?? []) as Array<{ name: string; definition?: string }>) {
    if (v.definition !== undefined) out.push({ where: `variable "${v.name}"`, expr: v.definition });
  }
  return out;
}

/** `expr` of every rule in a Prometheus rule file, with the alert's or record's name. */
export function ruleExprs(file = ALERTS): Array<{ where: string; expr: string }> {
  const doc = parse(readFileSync(file, 'utf8')) as {
    groups: Array<{ rules: Array<{ alert?: string; record?: string; expr: string }> }>;
  };
  return doc.groups.flatMap((g) =>
    g.rules.map((r) => ({ where: `rule ${r.alert ?? r.record ?? '?'}`, expr: String(r.expr) })),
  );
}

/** The input series of promtool's alert unit tests (they must use real names too). */
export function alertTestSeries(file = ALERT_TESTS): Array<{ where: string; expr: string }> {
  const doc = parse(readFileSync(file, 'utf8')) as {
    tests: Array<{ input_series?: Array<{ series: string }> }>;
  };
  return doc.tests.flatMap((t, i) =>
    (t.input_series ?? []).map((s) => ({ where: `alerts.test.yml test ${i + 1}`, expr: s.series })),
  );
}

/**
 * The sample names a Prometheus text exposition can produce, from its `# TYPE` lines: a histogram
 * `x` gives `x_bucket`, `x_sum`, `x_count`; a summary `x` gives `x`, `x_sum`, `x_count`.
 */
export function exposedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) names.add(name + s);
    else names.add(name);
  }
  return names;
}
