import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rulesSchema } from '../../../../src/config/scanners.js';
import { silentLogger } from '../../../../src/core/logger.js';
import { walkMessage } from '../../../../src/mime/walker.js';
import { RulesScanner } from '../../../../src/sandbox/rules/rules-scanner.js';
import { messageSource } from '../../../support/specimens.js';
import { ordinaryCorpus, type CorpusMessage } from '../../../support/ordinary-mail.js';

let spoolDir: string;
let corpus: CorpusMessage[];
beforeAll(async () => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-ordinary-'));
  corpus = await ordinaryCorpus();
});
afterAll(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

/**
 * The cost of the hostile-input rules on ordinary mail: none of these may become suspicious or
 * malicious, or even partial (every part decoded), and the walker finds no ambiguity in them.
 */
describe('ordinary mail stays clean under the default rules', () => {
  it('has the corpus the issue asks for', () => {
    expect(corpus.map((m) => m.name)).toHaveLength(14);
  });

  it.each([...Array(14).keys()])('message %i', async (i) => {
    const message = corpus[i] as CorpusMessage;
    const rules = new RulesScanner(rulesSchema.parse({}), { spoolDir });
    const finding = await rules.scan(messageSource(message.bytes), {
      signal: new AbortController().signal,
      deadline: Date.now() + 30_000,
      log: silentLogger,
      now: Date.now,
      memo: { run: (_k, compute) => compute() },
    });
    expect(finding, message.name).toMatchObject({ kind: 'clean' });
    expect(finding.kind === 'clean' && finding.partial === true, message.name).toBe(false);
    const summary = await walkMessage(
      messageSource(message.bytes),
      { limits: rulesSchema.parse({}).limits, spoolDir },
      () => Promise.resolve(),
    );
    expect(summary.anomalies, message.name).toEqual([]);
    expect(readdirSync(spoolDir)).toEqual([]);
  });
});
