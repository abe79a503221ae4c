import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { NODE_FLAGS } from '../../src/cli/node-flags.js';

const root = join(import.meta.dirname, '..', '..');
const bin = join(root, 'node_modules', '.bin', 'dockerfilelint');

/** dockerfilelint (devDependency) must be installed in CI; locally the test is skipped without it. */
function linterAvailable(): boolean {
  const ok = existsSync(bin);
  if (!ok && process.env.CI)
    throw new Error('dockerfilelint is not installed (devDependency dockerfilelint@1.8.0)');
  return ok;
}

it.runIf(linterAvailable())('the Dockerfile passes dockerfilelint with no findings', () => {
  // dockerfilelint's exit code is the number of issues; -o json gives them in detail.
  const r = spawnSync('npx', ['--no-install', 'dockerfilelint', '-o', 'json', 'Dockerfile'], {
    cwd: root,
    encoding: 'utf8',
  });
  const report = JSON.parse(r.stdout) as {
    files: Array<{ issues_count: number; issues: Array<{ line: string; title: string }> }>;
  };
  const issues = report.files.flatMap((f) => f.issues.map((i) => `line ${i.line}: ${i.title}`));
  expect(issues).toEqual([]);
  expect(r.status).toBe(0);
});

it('the Dockerfile keeps its contract: multi-stage, non-root, healthcheck, volumes', () => {
  const d = readFileSync(join(root, 'Dockerfile'), 'utf8');
  expect(d.match(/^FROM /gm)).toHaveLength(2);
  expect(d).toMatch(/^USER sandgate$/m);
  expect(d).toMatch(/^HEALTHCHECK /m);
  expect(d).toMatch(/^VOLUME \["\/etc\/sandgate", "\/var\/lib\/sandgate"\]$/m);
  // The entrypoint runs the sandgate command with the launchers' node flags (src/cli/node-flags.ts).
  const entrypoint = ['node', ...NODE_FLAGS, '/app/dist/cli/main.js']
    .map((a) => JSON.stringify(a))
    .join(', ');
  expect(d.split('\n')).toContain(`ENTRYPOINT [${entrypoint}]`);
});
