/**
 * packaging/prometheus/alerts.yml is valid (`promtool check rules`) and its alerts fire when they
 * should and stay quiet when they should not (`promtool test rules alerts.test.yml`).
 * promtool comes from Debian's `prometheus` package; locally without it these tests skip, in CI
 * (CI=true) a missing promtool is a failure (.ci/run installs it).
 */
import { spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ALERTS, ALERT_TESTS } from '../support/monitoring.js';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
const installed = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

function promtool(...args: string[]): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { cwd: dirname(ALERTS), encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe.skipIf(!installed && !inCi)(
  installed || inCi
    ? 'Prometheus alert rules (promtool)'
    : 'Prometheus alert rules: SKIPPED, promtool is not installed (apt-get install prometheus)',
  () => {
    it('has promtool', () => {
      expect(
        installed,
        'promtool is not installed but CI is set: .ci/run must `apt-get install -y prometheus` before the tests',
      ).toBe(true);
    });

    it('passes promtool check rules', () => {
      const r = promtool('check', 'rules', ALERTS);
      expect(r.output).toMatch(/SUCCESS: \d+ rules found/);
      expect(r.status, r.output).toBe(0);
    });

    it('passes the alert unit tests (promtool test rules)', () => {
      const r = promtool('test', 'rules', ALERT_TESTS);
      expect(r.status, r.output).toBe(0);
      expect(r.output).toContain('SUCCESS');
    });
  },
);
