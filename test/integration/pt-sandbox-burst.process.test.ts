/**
 * A burst against a healthy appliance at default settings, through the real `sandgate helper`
 * process: 200 pipelined FILE requests, each sandbox task answering in 2 s, no error. None may be
 * answered with a tempfail (REJECTED); the time to the last answer is measured by
 * bench/pt-sandbox.ts (15 s goal); here the bound is loose.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_PT_TOKEN, startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { CgpBase, CgpHelper } from '../support/cgp.js';

let base: CgpBase;
let sandbox: FakePtSandbox;
let helper: CgpHelper | undefined;

beforeAll(async () => {
  base = new CgpBase('sg-cgp-burst-');
  sandbox = await startFakePtSandbox({ taskDurationMs: 2_000, slots: 200 });
});
afterAll(async () => {
  helper?.kill();
  await sandbox.close();
  base.remove();
});

function mail(i: number): string {
  return [
    `From: sender${i}@example.org`,
    'To: rcpt@example.net',
    `Subject: report ${i}`,
    `Message-ID: <burst-${i}@example.org>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    randomBytes(6_000).toString('base64').replace(/.{76}/g, '$&\n'),
    '',
  ].join('\n');
}

describe('burst at default settings (helper process, fake PT Sandbox)', () => {
  it('200 pipelined requests, 2 s tasks, no errors: every one answered, none tempfailed', async () => {
    const tokenFile = join(base.dir, 'pt.token');
    writeFileSync(tokenFile, FAKE_PT_TOKEN);
    const files = Array.from({ length: 200 }, (_, i) =>
      base.queueFile(`Queue/${i % 32}/${i}.msg`, { body: mail(i) }),
    );
    // Defaults everywhere but where the appliance is and how to log.
    helper = CgpHelper.start({
      base,
      config: {
        stateDir: join(base.dir, 'state'),
        log: { file: join(base.dir, 'helper.log'), level: 'info' },
        scan: { chain: ['pt-sandbox'] },
        scanners: { ptSandbox: { url: sandbox.url, tokenFile } },
      },
    });
    await helper.request('0', 'INTF 4');
    const started = performance.now();
    helper.sendRaw(files.map((f, i) => `${i + 1} FILE ${f}\n`).join(''));
    await helper.replyCount(201, 45_000);
    const seconds = (performance.now() - started) / 1000;

    const answers = files.map((_, i) => helper!.replies.get(String(i + 1)) ?? []);
    expect(answers.every((a) => a.length === 1)).toBe(true);
    const notDelivered = answers
      .map((a) => a[0] ?? '')
      .filter((a) => !/^\d+ ADDHEADER "X-Sandgate-Verdict: clean; /.test(a));
    expect(notDelivered).toEqual([]);
    expect(seconds).toBeLessThan(40);
    expect(sandbox.tasksCreated()).toBe(200);
    // One version lookup for the whole burst.
    expect(sandbox.counters['maintenance/getVersion']).toBe(1);
    const { exit } = await helper.quit();
    expect(exit.code).toBe(0);
    expect(helper.stderr).toBe('');
  });
});
