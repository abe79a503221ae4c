/**
 * The real `sandgate helper` process against the fake PT Sandbox: answers in the order verdicts
 * come, the per-request deadline, and a restart with re-sent requests that creates no second task.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  defaultVerdict,
  FAKE_PT_TOKEN,
  startFakePtSandbox,
  type FakePtSandbox,
} from '../fakes/fake-pt-sandbox.js';
import { buildMessage } from '../support/specimens.js';
import { CgpBase, CgpHelper } from '../support/cgp.js';

let base: CgpBase;
let sandbox: FakePtSandbox;
const helpers: CgpHelper[] = [];

/** Task duration (ms) from an `X-Test-Duration: <ms>` line in the message. */
function verdictFor(bytes: Buffer) {
  const result = defaultVerdict(bytes);
  const m = /X-Test-Duration: (\d+)/.exec(bytes.toString('latin1'));
  return m ? { ...result, durationMs: Number(m[1]) } : result;
}

function message(subject: string, durationMs: number, verdict = 'CLEAN'): Buffer {
  return buildMessage({ subject, text: `X-Test-Duration: ${durationMs}\r\nX-Test-Verdict: ${verdict}\r\n` });
}

function config(stateDir: string, helper: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const tokenFile = join(base.dir, 'pt.token');
  writeFileSync(tokenFile, FAKE_PT_TOKEN);
  return {
    stateDir: join(base.dir, stateDir),
    log: { file: join(base.dir, `${stateDir}.log`), level: 'debug' },
    scan: { chain: ['pt-sandbox'] },
    scanners: {
      ptSandbox: {
        url: sandbox.url,
        tokenFile,
        polling: { firstDelay: '100ms', interval: '100ms' },
      },
    },
    helper,
    ...extra,
  };
}

function start(
  stateDir: string,
  helper: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): CgpHelper {
  const h = CgpHelper.start({ base, config: config(stateDir, helper, extra) });
  helpers.push(h);
  return h;
}

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const limit = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > limit) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  base = new CgpBase('sg-cgp-pt-');
  sandbox = await startFakePtSandbox({ verdictFor });
});
afterEach(() => {
  for (const h of helpers.splice(0)) h.kill();
});
afterAll(async () => {
  await sandbox.close();
  base.remove();
});

describe('sandgate helper (fake PT Sandbox)', () => {
  it('answers pipelined requests in the order their verdicts come, not the order they were sent', async () => {
    const slow = base.queueFile('Queue/10/1.msg', { body: message('slow', 1500) });
    const medium = base.queueFile('Queue/10/2.msg', { body: message('medium', 700, 'DANGEROUS') });
    const fast = base.queueFile('Queue/10/3.msg', { body: message('fast', 0) });
    const h = start('order');
    await h.request('1', 'INTF 4');
    h.send(`0002 FILE ${slow}`, `0003 FILE ${medium}`, `0004 FILE ${fast}`);
    await h.replyCount(4);
    const order = h.lines.filter((l) => /^000[234] /.test(l)).map((l) => l.split(' ')[0]);
    expect(order).toEqual(['0004', '0003', '0002']);
    expect(await h.reply('0002')).toMatch(/^0002 ADDHEADER "X-Sandgate-Verdict: clean; /);
    expect(await h.reply('0003')).toBe('0003 DISCARD');
    expect(await h.reply('0004')).toMatch(/^0004 ADDHEADER "X-Sandgate-Verdict: clean; /);
    const { exit } = await h.quit();
    expect(exit.code).toBe(0);
    expect(h.stderr).toBe('');
  });

  it('answers REJECTED at the deadline; after QUIT and a restart the re-sent request reuses the task', async () => {
    const f = base.queueFile('Queue/57/1846258457.msg', { body: message('restart', 2500) });
    const first = start('restart', { deadline: '800ms' });
    await first.request('1', 'INTF 4');
    // The core loads behind INTF (a request waits for it while its deadline runs): one answered
    // request means it is up, so the timed one below starts at once even on a busy machine.
    const warm = base.queueFile('Queue/57/warm-up.msg', { body: message('warm-up', 0) });
    expect(await first.request('20', `FILE ${warm}`)).toMatch(/^20 ADDHEADER /);
    const before = sandbox.tasksCreated();
    const sent = performance.now();
    expect(await first.request('2', `FILE ${f}`)).toMatch(
      /^2 REJECTED "sandgate: not scanned yet \((deadline|failure:timeout)\), will retry"$/,
    );
    const waited = performance.now() - sent;
    expect(waited).toBeGreaterThanOrEqual(700);
    expect(waited).toBeLessThan(1500);
    // The task goes on after the answer (its upload may finish just after the deadline).
    await until(() => sandbox.tasksCreated() - before === 1, 'the task to be created');

    // CommuniGate retries: the same request, still running in the sandbox; then QUIT with it pending.
    first.send(`3 FILE ${f}`);
    const { reply, exit } = await first.quit('4');
    expect(reply).toBe('4 OK');
    expect(exit.code).toBe(0);
    expect(first.replies.has('3')).toBe(false);
    expect(first.stderr).toBe('');

    // Auto-Restart: a new process, the pending request re-sent (same and new sequence numbers).
    const second = start('restart', { deadline: '10s' });
    second.send('1 INTF 4', `3 FILE ${f}`, `17 FILE ${f}`);
    expect(await second.reply('3')).toMatch(/^3 ADDHEADER "X-Sandgate-Verdict: clean; /);
    expect(await second.reply('17')).toMatch(/^17 ADDHEADER "X-Sandgate-Verdict: clean; /);
    expect(sandbox.tasksCreated() - before).toBe(1);
    await second.quit();
    expect(second.stderr).toBe('');
  });
});
