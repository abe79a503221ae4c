/**
 * A PT Sandbox url with http:// to another machine would send the API token in clear (issue 14):
 * refused at config load unless scanners.ptSandbox.allowInsecureHttp, then warned about at start.
 * Loopback http (the test fake) needs no flag.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSandgate } from '../support/cli.js';
import { startRelayProcess } from '../support/relay-process.js';
import { tempDir } from '../support/tmp.js';

describe('scanners.ptSandbox.url over plain http', () => {
  it('refuses http:// to another machine at config load, naming the key; loopback and the flag pass', async () => {
    const refused = await runSandgate([
      'check-config',
      '--set',
      'scanners.ptSandbox.url=http://sandbox.example.net',
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(
      /^ {2}scanners\.ptSandbox\.url: http:\/\/ to another machine .*\[ERR_CONFIG_INVALID\]$/m,
    );
    // The same for every command that loads the config (a scan never starts).
    const dir = tempDir();
    writeFileSync(join(dir, 'm.eml'), 'Subject: x\r\n\r\nx\r\n');
    const scan = await runSandgate(
      [
        'scan',
        '--set',
        'scan.chain=rules,pt-sandbox',
        '--set',
        'scanners.ptSandbox.url=http://192.0.2.7:8080',
        'm.eml',
      ],
      { cwd: dir, env: { SANDGATE_STATE_DIR: join(dir, 'state') } },
    );
    expect(scan.code).toBe(2);
    expect(scan.stderr).toContain('scanners.ptSandbox.url');
    expect(scan.stderr).toContain('[ERR_CONFIG_INVALID]');
    for (const url of [
      'http://127.0.0.1:9999',
      'http://127.8.9.10',
      'http://localhost:8080',
      'http://[::1]:8080',
      'https://sandbox.example.net',
    ]) {
      const ok = await runSandgate(['check-config', '--set', `scanners.ptSandbox.url=${url}`]);
      expect(ok.code, url).toBe(0);
    }
    const allowed = await runSandgate([
      'check-config',
      '--json',
      '--set',
      'scanners.ptSandbox.url=http://sandbox.example.net',
      '--set',
      'scanners.ptSandbox.allowInsecureHttp=true',
    ]);
    expect(allowed.code).toBe(0);
    expect(JSON.parse(allowed.stdout)).toMatchObject({
      scanners: { ptSandbox: { allowInsecureHttp: true } },
    });
  });

  it('with allowInsecureHttp the relay starts and warns (pt.http_insecure); loopback http does not warn', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'pt-token'), 'not-a-real-token\n');
    const config = (url: string, allow: boolean) => {
      const file = join(dir, `relay-${allow ? 'allow' : 'loopback'}.yaml`);
      writeFileSync(
        file,
        JSON.stringify({
          stateDir: join(dir, 'state'),
          scan: { chain: ['rules', 'pt-sandbox'] },
          scanners: { ptSandbox: { url, tokenFile: join(dir, 'pt-token'), allowInsecureHttp: allow } },
          relay: { listen: '127.0.0.1:0', nextHop: `directory:${join(dir, 'out')}` },
        }),
      );
      return file;
    };
    // Nothing is sent at start: the sandbox need not exist.
    const insecure = await startRelayProcess(config('http://sandbox.invalid:8080', true));
    try {
      const warning = await insecure.waitForRecord((r) => r.event === 'pt.http_insecure');
      expect(warning).toMatchObject({ level: 40, url: 'http://sandbox.invalid:8080' });
    } finally {
      await insecure.stop();
    }
    const loopback = await startRelayProcess(config('http://127.0.0.1:9', false));
    try {
      expect(loopback.records.some((r) => r.event === 'relay.listening')).toBe(true);
    } finally {
      await loopback.stop();
    }
    expect(loopback.records.filter((r) => r.event === 'pt.http_insecure')).toEqual([]);
  });
});
