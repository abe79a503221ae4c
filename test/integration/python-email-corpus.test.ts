import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rulesSchema } from '../../src/config/scanners.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Finding } from '../../src/core/outcome.js';
import { RulesScanner } from '../../src/sandbox/rules/rules-scanner.js';
import { messageSource } from '../support/specimens.js';

/** Debian's libpython3.11-testsuite: Python's e-mail test messages, many malformed on purpose. */
const CORPUS = '/usr/lib/python3.11/test/test_email/data';
const installed = existsSync(CORPUS);
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';

/** The table in docs/SECURITY.md: message -> [verdict, rule]. */
function documented(): Map<string, [string, string]> {
  const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'SECURITY.md'), 'utf8');
  const rows = new Map<string, [string, string]>();
  for (const m of doc.matchAll(/^\| (msg_\w+\.txt) \| (\w+) \| `([\w-]+)` \|/gm)) {
    rows.set(m[1] as string, [m[2] as string, m[3] as string]);
  }
  return rows;
}

describe.skipIf(!installed && !inCi)('Python e-mail test messages under the default rules', () => {
  let spoolDir: string;
  const results = new Map<string, Finding>();

  beforeAll(async () => {
    if (!installed) {
      throw new Error(`${CORPUS} is missing but CI is set: .ci/run must install libpython3.11-testsuite`);
    }
    spoolDir = mkdtempSync(join(tmpdir(), 'sg-pycorpus-'));
    const rules = new RulesScanner(rulesSchema.parse({}), { spoolDir });
    for (const file of readdirSync(CORPUS).filter((f) => /^msg_\w+\.txt$/.test(f))) {
      results.set(
        file,
        await rules.scan(messageSource(readFileSync(join(CORPUS, file))), {
          signal: new AbortController().signal,
          deadline: Date.now() + 30_000,
          log: silentLogger,
          now: Date.now,
          memo: { run: (_k, compute) => compute() },
        }),
      );
    }
  });
  afterAll(() => {
    if (spoolDir !== undefined) rmSync(spoolDir, { recursive: true, force: true });
  });

  it('reads the corpus', () => {
    expect(results.size).toBeGreaterThanOrEqual(40);
  });

  it('flags exactly what docs/SECURITY.md records, with the recorded rule; everything else is clean', () => {
    const table = documented();
    expect(table.size).toBeGreaterThan(0);
    const actual = new Map<string, [string, string]>();
    for (const [file, f] of results) {
      if (f.kind === 'clean' && f.partial !== true) continue;
      const rule =
        f.kind === 'clean' ? 'partial' : String(f.details?.rule ?? (f.kind === 'failed' ? f.reason : ''));
      actual.set(file, [f.kind, rule]);
    }
    expect(Object.fromEntries(actual)).toEqual(Object.fromEntries(table));
  });
});
