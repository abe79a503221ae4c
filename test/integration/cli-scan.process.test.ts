import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSandgate } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { CLEAN_MAIL } from '../support/runtime.js';
import { specimens } from '../support/specimens.js';

describe('sandgate scan (the built CLI)', () => {
  it('exits 1 and names the threat for an EICAR attachment', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'eicar.eml'), specimens.eicarBase64());
    const r = await runSandgate(['scan', 'eicar.eml'], {
      cwd: dir,
      env: { SANDGATE_STATE_DIR: join(dir, 'state') },
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^verdict\s+malicious$/m);
    expect(r.stdout).toContain('Sandgate.Test.EICAR');
    expect(r.stderr).toBe('');
  });

  it('exits 0 for a clean message, read from stdin, and prints JSON on request', async () => {
    const dir = tempDir();
    const r = await runSandgate(['scan', '--json', '-'], {
      cwd: dir,
      env: { SANDGATE_STATE_DIR: join(dir, 'state') },
      input: CLEAN_MAIL,
    });
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as {
      decision: { verdict: string; action: string };
      outcomes: Array<{ scanner: string }>;
    };
    expect(json.decision).toMatchObject({ verdict: 'clean', action: 'deliver' });
    expect(json.outcomes.map((o) => o.scanner)).toEqual(['rules']);
  });

  it('exits 2 with a clear message for a missing file', async () => {
    const dir = tempDir();
    const r = await runSandgate(['scan', 'nope.eml'], {
      cwd: dir,
      env: { SANDGATE_STATE_DIR: join(dir, 'state') },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('cannot read nope.eml: no such file [ERR_INPUT_NOT_FOUND]');
    expect(r.stdout).toBe('');
  });

  it('exits 2 naming the key for a bad configuration', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'm.eml'), CLEAN_MAIL);
    const r = await runSandgate(['scan', '--set', 'scan.chain=rules,virustotal', 'm.eml'], {
      cwd: dir,
      env: { SANDGATE_STATE_DIR: join(dir, 'state') },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('scan.chain.1');
    expect(r.stderr).toContain('[ERR_CONFIG_INVALID]');
  });

  it('check-config prints the effective configuration and exits 0', async () => {
    const r = await runSandgate(['check-config', '--json'], { env: { SANDGATE_SCAN__DEADLINE: '90s' } });
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { scan: { deadline: number } }).scan.deadline).toBe(90_000);
  });
});
