/**
 * The real `sandgate helper` process against hostile queue files and protocol lines (issue 14):
 * messages over the size limit, FIFOs and other non-regular files, symlinked queue files and
 * over-long numbered lines. Every test asserts an empty stderr. See test/support/cgp.ts.
 */
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
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
