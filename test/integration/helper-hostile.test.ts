/**
 * The real `sandgate helper` process against hostile queue files and protocol lines (issue 14):
 * messages over the size limit, FIFOs and other non-regular files, symlinked queue files and
 * over-long numbered lines. Every test asserts an empty stderr. See test/support/cgp.ts.
 */
import { spawnSync } from 'node:child_process';
import {
  readFileSync,
  readdirSync,
  writeFileSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CgpBase, CgpHelper } from '../support/cgp.js';
import { buildMessage, EICAR } from '../support/specimens.js';

let base: CgpBase;
const helpers: CgpHelper[] = [];

function start(name: string, extra: Record<string, unknown> = {}): CgpHelper {
  const h = CgpHelper.start({
    base,
    config: {
      stateDir: join(base.dir, `state-${name}`),
      log: { file: join(base.dir, `${name}.log`), level: 'debug' },
      scan: { chain: ['rules'], ...((extra.scan as object | undefined) ?? {}) },
      ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'scan')),
    },
  });
  helpers.push(h);
  return h;
}

function logOf(name: string): Array<Record<string, unknown>> {
  return readFileSync(join(base.dir, `${name}.log`), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function clean(subject: string): Buffer {
  return buildMessage({ subject, text: `Hello ${subject}\r\n` });
}

/** An EICAR attachment behind a text body of `pad` bytes: malicious, if anyone looked. */
function bigInfected(pad: number): Buffer {
  return buildMessage({
    subject: 'big',
    text: `${'padding line of an ordinary size message\r\n'.repeat(Math.ceil(pad / 42))}`,
    attachments: [{ filename: 'eicar.com', content: EICAR }],
  });
}

beforeAll(() => {
  base = new CgpBase('sg-cgp-hostile-');
});
afterEach(() => {
  for (const h of helpers.splice(0)) h.kill();
});
afterAll(() => base.remove());

describe('sandgate helper: messages over scan.maxMessageSize', () => {
  it('applies policy.failure.too-large without scanning: DISCARD after a copy of the whole message', async () => {
    const body = bigInfected(200_000);
    const f = base.queueFile('Queue/big/1.msg', { body });
    const h = start('too-large', { scan: { maxMessageSize: '64k' } });
    expect(await h.request('1', `FILE ${f}`)).toBe('1 DISCARD');
    await h.quit();
    expect(h.stderr).toBe('');
    const reply = logOf('too-large').find((l) => l.event === 'helper.reply');
    // Not scanned: the rules engine would have said malicious.
    expect(reply).toMatchObject({
      seq: '1',
      action: 'quarantine',
      verdict: 'unscanned',
      reason: 'failure:too-large',
      outcomes: ['rules:failed(too-large)'],
    });
    // The quarantine copy is the whole message, byte for byte (the queue file after its envelope).
    const dir = join(base.dir, 'state-too-large', 'quarantine');
    const stored = readdirSync(dir, { recursive: true })
      .map(String)
      .find((n) => n.endsWith(`${String(reply?.quarantineId)}.eml.gz`));
    expect(stored).toBeDefined();
    const original = readFileSync(base.path(f));
    const copy = gunzipSync(readFileSync(join(dir, stored!)));
    expect(copy.length).toBeGreaterThan(190_000); // LF line ends in a Unix queue file
    expect(original.subarray(original.length - copy.length).equals(copy)).toBe(true);
  });

  it('answers REJECTED (tempfail) when the copy the policy asks for cannot be written', async () => {
    const qdir = join(base.dir, 'blocked-quarantine');
    mkdirSync(qdir, { recursive: true });
    // Files where today's and tomorrow's day directories should be: every write fails, also as root.
    for (const d of [0, 1]) {
      writeFileSync(
        join(qdir, new Date(Date.now() + d * 86_400_000).toISOString().slice(0, 10)),
        'in the way',
      );
    }
    const f = base.queueFile('Queue/big/2.msg', { body: bigInfected(100_000) });
    const h = start('too-large-blocked', { scan: { maxMessageSize: '64k' }, quarantine: { dir: qdir } });
    expect(await h.request('1', `FILE ${f}`)).toBe(
      '1 REJECTED "sandgate: not scanned yet (quarantine-failed), will retry"',
    );
    await h.quit();
    expect(h.stderr).toBe('');
    expect(logOf('too-large-blocked').find((l) => l.event === 'helper.reply')).toMatchObject({
      action: 'tempfail',
      reason: 'quarantine-failed',
      outcomes: ['rules:failed(too-large)'],
    });
  });

  it('scans a message at or under the limit as usual', async () => {
    const f = base.queueFile('Queue/big/3.msg', { body: bigInfected(1_000) });
    const h = start('under-limit', { scan: { maxMessageSize: '64k' } });
    expect(await h.request('1', `FILE ${f}`)).toBe('1 DISCARD');
    await h.quit();
    expect(logOf('under-limit').find((l) => l.event === 'helper.reply')).toMatchObject({
      verdict: 'malicious',
    });
    expect(h.stderr).toBe('');
  });
});

describe('sandgate helper: queue files that are not regular files', () => {
  it('answers five FIFOs with REJECTED at once, then a clean message within a second, and QUIT exits', async () => {
    for (let i = 1; i <= 5; i++) {
      expect(spawnSync('mkfifo', [base.path(`Queue/fifo${i}.msg`)]).status).toBe(0);
    }
    const f = base.queueFile('Queue/fifo-after.msg', { body: clean('after the fifos') });
    const warm = base.queueFile('Queue/fifo-before.msg', { body: clean('before the fifos') });
    const h = start('fifo');
    expect(await h.request('1', 'INTF 4')).toBe('1 INTF 4');
    // The core (state database, scanners) has loaded: what follows measures the FIFOs alone.
    expect(await h.request('2', `FILE ${warm}`)).toMatch(/^2 ADDHEADER /);
    const sent = performance.now();
    h.send(...[1, 2, 3, 4, 5].map((i) => `${10 + i} FILE Queue/fifo${i}.msg`), `20 FILE ${f}`);
    const answer = await h.reply('20', 5_000);
    expect(performance.now() - sent).toBeLessThan(1_000);
    expect(answer).toMatch(/^20 ADDHEADER "X-Sandgate-Verdict: clean; /);
    for (let i = 1; i <= 5; i++) {
      expect(await h.reply(String(10 + i), 1_000)).toBe(
        `${10 + i} REJECTED "sandgate: not scanned yet (queue-file-not-regular), will retry"`,
      );
    }
    const quitAt = performance.now();
    const { reply, exit } = await h.quit('30', 5_000);
    expect(reply).toBe('30 OK');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(performance.now() - quitAt).toBeLessThan(3_000);
    expect(h.stderr).toBe('');
    expect(
      logOf('fifo')
        .filter((l) => l.event === 'helper.queue_file_error')
        .map((l) => l.reason),
    ).toEqual(Array(5).fill('queue-file-not-regular'));
  });

  it('refuses a queue file that is a symbolic link; a Queue directory that is a link still works', async () => {
    // Another disk: a directory outside the base directory, reached through a link inside it.
    const elsewhere = mkdtempSync(join(tmpdir(), 'sg-cgp-disk-'));
    try {
      writeFileSync(
        join(elsewhere, '1.msg'),
        readFileSync(base.path(base.queueFile('Queue/x/orig.msg', { body: clean('linked dir') }))),
      );
      symlinkSync(elsewhere, base.path('Queue/ondisk'));
      // Links as the queue file itself: to a file inside the base directory and to one outside.
      symlinkSync(base.path('Queue/x/orig.msg'), base.path('Queue/link-inside.msg'));
      symlinkSync('/etc/passwd', base.path('Queue/link-outside.msg'));
      const h = start('symlink');
      expect(await h.request('1', 'FILE Queue/ondisk/1.msg')).toMatch(
        /^1 ADDHEADER "X-Sandgate-Verdict: clean; /,
      );
      for (const [seq, f] of [
        ['2', 'Queue/link-inside.msg'],
        ['3', 'Queue/link-outside.msg'],
      ] as const) {
        expect(await h.request(seq, `FILE ${f}`)).toBe(
          `${seq} REJECTED "sandgate: not scanned yet (queue-file-symlink), will retry"`,
        );
      }
      // A path that leaves the base directory lexically is still refused as such.
      expect(await h.request('4', 'FILE Queue/ondisk/../../../etc/passwd')).toBe(
        '4 REJECTED "sandgate: not scanned yet (outside-base), will retry"',
      );
      await h.quit();
      expect(h.stderr).toBe('');
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});

describe('sandgate helper: over-long command lines', () => {
  it('answers a 5,000-character numbered line by its number with REJECTED; an unnumbered one only logs', async () => {
    const f = base.queueFile('Queue/long/1.msg', { body: clean('after a long line') });
    const h = start('long-line');
    h.send(
      `3 FILE ${'Q'.repeat(5_000)}`,
      `FILE ${'Q'.repeat(5_000)}`,
      `00004\tFILE Queue/${'x/'.repeat(2_500)}1.msg`,
    );
    expect(await h.reply('3', 5_000)).toBe(
      '3 REJECTED "sandgate: not scanned yet (line-too-long), will retry"',
    );
    expect(await h.reply('00004', 5_000)).toBe(
      '00004 REJECTED "sandgate: not scanned yet (line-too-long), will retry"',
    );
    // The session goes on.
    expect(await h.request('5', `FILE ${f}`)).toMatch(/^5 ADDHEADER "X-Sandgate-Verdict: clean; /);
    const { exit } = await h.quit('6');
    expect(exit).toEqual({ code: 0, signal: null });
    expect([...h.replies.keys()].sort()).toEqual(['00004', '3', '5', '6']);
    expect(h.stderr).toBe('');
    const log = logOf('long-line');
    expect(log.filter((l) => l.event === 'helper.line_too_long').map((l) => l.seq)).toEqual(['3', '00004']);
    expect(log.filter((l) => l.event === 'helper.junk_line').map((l) => l.reason)).toEqual(['too-long']);
  });
});
