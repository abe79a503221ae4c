/**
 * Debian's miltertest (the libmilter-based MTA simulator from OpenDKIM) drives the built
 * `sandgate milter` process with the Lua scripts in test/milter/: an independent implementation
 * of the MTA side checks our negotiation, replies and header edits.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { miltertestAvailable, startMilterProcess, type MilterProcess } from '../support/milter-process.js';

const SCRIPTS = join(import.meta.dirname, '../milter');

describe.runIf(miltertestAvailable())('sandgate milter under miltertest', () => {
  let milter: MilterProcess;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sg-miltertest-'));
    const configFile = join(dir, 'sandgate.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        stateDir: join(dir, 'state'),
        scan: { chain: ['rules'] },
        // No message id in the text: miltertest matches a reply only as a whole.
        milter: { listen: 'inet:127.0.0.1:0', rejectText: 'Message refused: {threats}' },
      }),
    );
    milter = await startMilterProcess(configFile);
  });

  afterAll(async () => {
    expect(await milter?.stop()).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  });

  for (const script of ['negotiate', 'clean', 'eicar', 'abort', 'size']) {
    it(`${script}.lua`, () => {
      const r = spawnSync(
        'miltertest',
        ['-D', `port=${milter.port}`, '-D', `dir=${SCRIPTS}`, '-s', join(SCRIPTS, `${script}.lua`)],
        { encoding: 'utf8', timeout: 30_000 },
      );
      // A failing check prints "FAILED: <what>" (miltertest itself reports only "open(): ...").
      expect(r.stdout).not.toMatch(/FAILED/);
      expect(r.stdout).toContain(`ok ${script}`);
      expect(r.status).toBe(0);
    });
  }

  it('logged one summary line per judged message, with the decision', async () => {
    const lines = () => milter.records.filter((r) => r.event === 'milter.message');
    await milter.waitForRecord((r) => r.event === 'milter.message' && r.action === 'reject');
    expect(
      lines()
        .map((r) => r.action)
        .sort(),
    ).toEqual(['deliver', 'deliver', 'reject']);
    expect(milter.records.filter((r) => r.event === 'milter.size_refused')).toHaveLength(1);
    expect(milter.records.filter((r) => r.event === 'milter.protocol_error')).toEqual([]);
  });
});
