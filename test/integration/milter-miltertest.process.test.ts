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
        admin: { enabled: true, listen: '127.0.0.1:0' },
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

  it('serves health, readiness and its metrics on the admin port', async () => {
    const admin = await milter.waitForRecord((r) => r.event === 'admin.listening');
    const base = `http://127.0.0.1:${String(admin.port)}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^sandgate_milter_replies_total\{code="550",action="reject"\} 1$/m);
    expect(metrics).toMatch(/^sandgate_milter_replies_total\{code="250",action="deliver"\} 2$/m);
    expect(metrics).toMatch(/^sandgate_milter_connections \d+$/m);
    expect(metrics).toMatch(
      /^sandgate_messages_total\{front_end="milter",action="reject",reason="malicious"\} 1$/m,
    );
  });
});
