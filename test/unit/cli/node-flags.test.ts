import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NODE_FLAGS } from '../../../src/cli/node-flags.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const flags = NODE_FLAGS.join(' ');

describe('every launcher starts node with NODE_FLAGS', () => {
  it('has flags to carry', () => {
    expect(NODE_FLAGS.length).toBeGreaterThan(0);
    for (const f of NODE_FLAGS) expect(f).toMatch(/^--[a-z-]+=\S+$/);
  });

  it('the sandgate command: the shebang of src/cli/main.ts (tsc keeps it)', () => {
    expect(read('src/cli/main.ts').split('\n')[0]).toBe(`#!/usr/bin/env -S node ${flags}`);
  });

  it('the Docker image: its entrypoint', () => {
    const line = read('Dockerfile')
      .split('\n')
      .find((l) => l.startsWith('ENTRYPOINT '));
    expect(JSON.parse(line?.slice('ENTRYPOINT '.length) ?? 'null')).toEqual([
      'node',
      ...NODE_FLAGS,
      '/app/dist/cli/main.js',
    ]);
  });

  it('npm start', () => {
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toContain(`node ${flags} dist/cli/main.js relay`);
  });

  it('the CommuniGate Program Path in docs/communigate.md (Program Path and ProgramName)', () => {
    const doc = read('docs/communigate.md');
    const paths = [...doc.matchAll(/\/usr\/bin\/node [^`";]*main\.js helper/g)].map((m) => m[0]);
    expect(paths).toHaveLength(2);
    for (const p of paths)
      expect(p).toBe(`/usr/bin/node ${flags} /usr/lib/node_modules/sandgate/dist/cli/main.js helper`);
  });
});
