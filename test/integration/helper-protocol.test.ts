/**
 * The real `sandgate helper` process, driven as CommuniGate Pro drives it, with the embedded
 * rules scanner (EICAR specimen for malicious mail). See test/support/cgp.ts.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildMessage, EICAR } from '../support/specimens.js';
import { CgpBase, CgpHelper } from '../support/cgp.js';

const REPLY_LINE =
  /^(\d+ (OK|INTF \d+|DISCARD|ADDHEADER "([^"\\\r\n]|\\.)*" OK|ERROR "([^"\\\r\n]|\\.)*"|REJECTED "([^"\\\r\n]|\\.)*")|\* [^\r\n]*)$/;

let base: CgpBase;
const helpers: CgpHelper[] = [];

function config(extra: Record<string, unknown> = {}) {
  return {
    stateDir: join(base.dir, 'sandgate-state'),
    log: { file: join(base.dir, 'sandgate.log'), level: 'debug' },
    scan: { chain: ['rules'] },
    ...extra,
  };
}

function start(extra: Record<string, unknown> = {}, args: string[] = []): CgpHelper {
  const h = CgpHelper.start({ base, config: config(extra), args });
  helpers.push(h);
  return h;
}

function clean(subject: string): Buffer {
  return buildMessage({ subject, text: `Hello ${subject}\r\n` });
}

function infected(subject: string): Buffer {
  return buildMessage({ subject, attachments: [{ filename: 'eicar.com.txt', content: EICAR }] });
}

/** Every stdout line is a well-formed protocol line of at most 4096 bytes. */
function expectWellFormed(h: CgpHelper): void {
  for (const line of h.lines) {
    expect(line, line).toMatch(REPLY_LINE);
    expect(Buffer.byteLength(line) + 1).toBeLessThanOrEqual(4096);
  }
  expect(h.stdoutBytes.toString('utf8').endsWith('\n')).toBe(true);
  for (const [seq, list] of h.replies) expect(list, `replies to ${seq}`).toHaveLength(1);
}

beforeAll(() => {
  base = new CgpBase('sg-cgp-rules-');
});
afterEach(() => {
  for (const h of helpers.splice(0)) h.kill();
});
afterAll(() => base.remove());

describe('sandgate helper (rules scanner)', () => {
  it('announces itself and negotiates INTF min(server, 4)', async () => {
    const h = start();
    expect(await h.request('1', 'INTF 1')).toBe('1 INTF 1');
    expect(await h.request('2', 'INTF 3')).toBe('2 INTF 3');
    expect(await h.request('3', 'INTF 4')).toBe('3 INTF 4');
    expect(await h.request('4', 'INTF 5')).toBe('4 INTF 4');
    expect(await h.request('5', 'KEY whatever')).toBe('5 OK');
    expect(await h.request('6', 'HELLO there')).toBe('6 ERROR "unsupported command"');
    expect(h.lines[0]).toMatch(/^\* sandgate helper \S+ started/);
    const { reply, exit } = await h.quit('7');
    expect(reply).toBe('7 OK');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(h.stderr).toBe('');
    expectWellFormed(h);
  });

  it('honours a configured maximum protocol version', async () => {
    const h = start({ helper: { maxProtocolVersion: 5 } });
    expect(await h.request('1', 'INTF 5')).toBe('1 INTF 5');
    expect(await h.request('2', 'INTF 6')).toBe('2 INTF 5');
    await h.quit();
  });

  it('answers pipelined FILE requests for every queue file shape, leaving the files unchanged', async () => {
    const files = {
      single: base.queueFile('Queue/1001.msg', { body: clean('single') }),
      multi: base.queueFile('Queue/1002.msg', {
        recipients: ['a@example.net', 'b@example.net', 'c@example.org'],
        body: clean('multi'),
      }),
      dsn: base.queueFile('Queue/1003.msg', {
        sender: '',
        module: 'DSN',
        aLine: false,
        order: ['P', 'O', 'S', 'R'],
        body: clean('dsn'),
      }),
      crlf: base.queueFile('Queue/1004.msg', { crlf: true, body: clean('crlf') }),
      hashed: base.queueFile('Queue/57/1846258457.msg', { body: clean('hashed') }),
      virus: base.queueFile('Queue/57/1846258460.msg', { body: infected('virus') }),
      virusCrlf: base.queueFile('Queue/58/1846258461.msg', { crlf: true, body: infected('virus-crlf') }),
      eightBit: base.queueFile('Queue/1005.msg', {
        body: Buffer.concat([
          Buffer.from('Subject: 8bit\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n'),
          randomBytes(2048),
        ]),
      }),
    };
    const hashes = Object.fromEntries(Object.values(files).map((f) => [f, base.hash(f)]));
    const h = start();
    h.send(
      '00001 INTF 4',
      `00002 FILE ${files.single}`,
      `00003 FILE ${files.multi}`,
      `00004 FILE ${files.dsn}`,
      `00005 FILE ${files.crlf}`,
      `00006 FILE ${files.hashed}`,
      `00007 FILE ${files.virus}`,
      `00008 FILE ${files.virusCrlf}`,
      `00009 FILE ${files.eightBit}`,
      `00010 FILE "${files.single}" HEADERS`,
      `00011 FILE Queue\\57\\1846258457.msg`,
      '00012 FILE Queue/does-not-exist.msg',
      '00013 FILE ../outside.msg',
      '00014 FILE /etc/passwd',
      '00015 FILE',
    );
    await h.replyCount(15);
    expect(h.replies.get('00001')).toEqual(['00001 INTF 4']);
    for (const seq of ['00002', '00003', '00004', '00005', '00006', '00009', '00010', '00011']) {
      expect(await h.reply(seq), seq).toMatch(
        new RegExp(`^${seq} ADDHEADER "X-Sandgate-Verdict: clean; .*\\\\eX-Sandgate-Mark: .*" OK$`),
      );
    }
    expect(await h.reply('00007')).toBe('00007 DISCARD');
    expect(await h.reply('00008')).toBe('00008 DISCARD');
    expect(await h.reply('00012')).toBe(
      '00012 REJECTED "sandgate: not scanned yet (queue-file-missing), will retry"',
    );
    expect(await h.reply('00013')).toBe(
      '00013 REJECTED "sandgate: not scanned yet (outside-base), will retry"',
    );
    expect(await h.reply('00014')).toBe(
      '00014 REJECTED "sandgate: not scanned yet (outside-base), will retry"',
    );
    expect(await h.reply('00015')).toBe('00015 REJECTED "sandgate: not scanned yet (bad-path), will retry"');
    // Leading zeros are echoed: no reply carries a stripped token.
    expect([...h.replies.keys()].every((k) => k.startsWith('000'))).toBe(true);

    const { exit } = await h.quit('00016');
    expect(exit.code).toBe(0);
    expect(h.stderr).toBe('');
    expectWellFormed(h);
    for (const [f, sum] of Object.entries(hashes)) expect(base.hash(f), f).toBe(sum);

    // The malicious messages were copied to the quarantine before DISCARD.
    const quarantine = join(base.dir, 'sandgate-state', 'quarantine');
    expect(existsSync(quarantine)).toBe(true);
    const stored = readdirSync(quarantine, { recursive: true }).map(String);

    // The log is JSON with our events; the envelope of each file was read correctly.
    const log = readFileSync(join(base.dir, 'sandgate.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const queueFiles = log.filter((l) => l.event === 'helper.queue_file');
    const bySeq = Object.fromEntries(queueFiles.map((l) => [l.seq, l]));
    expect(bySeq['00003']).toMatchObject({ recipients: 3, module: 'SMTP' });
    expect(bySeq['00004']).toMatchObject({ recipients: 1, module: 'DSN' });
    const replies = Object.fromEntries(log.filter((l) => l.event === 'helper.reply').map((l) => [l.seq, l]));
    expect(replies['00007']).toMatchObject({ action: 'reject', verdict: 'malicious', reply: 'DISCARD' });
    for (const seq of ['00007', '00008']) {
      const id = replies[seq]?.quarantineId;
      expect(typeof id, seq).toBe('string');
      expect(
        stored.some((n) => n.endsWith(`${String(id)}.eml.gz`)),
        seq,
      ).toBe(true);
    }
    expect(
      log
        .filter((l) => l.event === 'helper.queue_file_error')
        .map((l) => l.reason)
        .sort(),
    ).toEqual(['outside-base', 'outside-base', 'queue-file-missing']);
  });

  it('bounces with ERROR "text" when rejectWord is ERROR', async () => {
    const f = base.queueFile('Queue/2001.msg', { body: infected('bounce') });
    const h = start({ helper: { rejectWord: 'ERROR', texts: { reject: 'Refused: {threats}' } } });
    expect(await h.request('1', `FILE ${f}`)).toMatch(/^1 ERROR "Refused: [^"]*EICAR[^"]*"$/);
    await h.quit();
  });

  it('survives 3,000 lines of random junk and still answers a valid request right', async () => {
    const f = base.queueFile('Queue/3001.msg', { body: infected('after junk') });
    const h = start();
    const junk: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const kind = i % 4;
      if (kind === 0) junk.push(Buffer.from(randomBytes(1 + (i % 200)).map((b) => (b === 0x0a ? 0x20 : b))));
      else if (kind === 1) junk.push(Buffer.from(`x${i} FILE Queue/3001.msg`));
      else if (kind === 2) junk.push(Buffer.from('* not from the server'));
      else junk.push(Buffer.from(' '.repeat(i % 7)));
      junk.push(Buffer.from(i % 3 === 0 ? '\r\n' : '\n'));
    }
    junk.push(Buffer.from('A'.repeat(70_000) + '\n')); // longer than maxLineLength
    h.sendRaw(Buffer.concat(junk));
    expect(await h.request('42', `FILE ${f}`)).toBe('42 DISCARD');
    expect(await h.request('43', 'INTF 4')).toBe('43 INTF 4');
    // Junk lines that start with a number look like commands and are answered as unknown ones;
    // nothing else is answered.
    for (const [seq, list] of h.replies) {
      if (seq === '42' || seq === '43') continue;
      expect(list[0], seq).toMatch(/^\d+ ERROR "unsupported command"$/);
    }
    const { exit } = await h.quit();
    expect(exit.code).toBe(0);
    expect(h.stderr).toBe('');
  });

  it('QUIT with requests pending: OK and exit 0 at once, the pending ones unanswered', async () => {
    const files = Array.from({ length: 20 }, (_, i) =>
      base.queueFile(`Queue/4${i}.msg`, { body: clean(`pending ${i}`) }),
    );
    const h = start();
    await h.request('1', 'INTF 4');
    // One write: QUIT is read while the FILE requests are still being evaluated.
    h.sendRaw(files.map((f, i) => `${100 + i} FILE ${f}\n`).join('') + '200 QUIT\n300 INTF 4\n');
    const exit = await h.waitExit();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(h.replies.get('200')).toEqual(['200 OK']);
    expect(h.replies.has('300')).toBe(false);
    const last = h.lines.filter((l) => !l.startsWith('* ')).at(-1);
    expect(last).toBe('200 OK');
    expect(h.stderr).toBe('');
    expectWellFormed(h);
  });

  it('end of input: answers what is in flight, then exits 0', async () => {
    const f = base.queueFile('Queue/5001.msg', { body: clean('eof') });
    const h = start();
    h.sendRaw(`1 INTF 4\n2 FILE ${f}\n3 FILE ${f}`); // the last line has no end of line
    const exit = await h.endInput();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(h.replies.get('2')?.[0]).toMatch(/^2 ADDHEADER /);
    expect(h.replies.get('3')?.[0]).toMatch(/^3 ADDHEADER /);
    expect(h.stderr).toBe('');
  });

  it('answers the tempfail reply for a malformed queue file and an envelope-less file', async () => {
    const noBlank = base.queueFile(
      'Queue/6001.msg',
      Buffer.from('P I x <a@example.test>\nR W x <b@example.net>\n'),
    );
    const plain = base.queueFile('Queue/6002.msg', clean('no envelope'));
    const h = start();
    expect(await h.request('1', `FILE ${noBlank}`)).toBe(
      '1 REJECTED "sandgate: not scanned yet (queue-file-malformed), will retry"',
    );
    expect(await h.request('2', `FILE ${plain}`)).toBe(
      '2 REJECTED "sandgate: not scanned yet (queue-file-malformed), will retry"',
    );
    await h.quit();
  });

  it('with a broken config: stays up, says why in a * line, answers every FILE with REJECTED', async () => {
    const f = base.queueFile('Queue/7001.msg', { body: clean('broken') });
    const h = CgpHelper.start({
      base,
      config: base.config('broken.yaml', 'scan:\n  chain: [nosuchscanner]\n'),
    });
    helpers.push(h);
    expect(await h.request('1', 'INTF 4')).toBe('1 INTF 4');
    expect(await h.request('2', `FILE ${f}`)).toBe(
      '2 REJECTED "sandgate: not scanned yet (config), will retry"',
    );
    expect(await h.request('3', `FILE ${f}`)).toBe(
      '3 REJECTED "sandgate: not scanned yet (config), will retry"',
    );
    const why = await h.waitForInfo(/cannot scan/);
    expect(why).toContain('ERR_CONFIG_INVALID');
    expect(why).toContain('scan.chain');
    const { exit } = await h.quit();
    expect(exit.code).toBe(0);
    expect(h.stderr).toBe('');
    expectWellFormed(h);
  });

  it('serves /healthz and /metrics on the optional admin port', async () => {
    const f = base.queueFile('Queue/9001.msg', { body: clean('metrics') });
    const h = start({ admin: { enabled: true, listen: '127.0.0.1:0' } });
    const line = await h.waitForInfo(/admin port listening on/);
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(line)?.[1]);
    expect(port).toBeGreaterThan(0);
    expect(await h.request('1', `FILE ${f}`)).toMatch(/^1 ADDHEADER /);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/^sandgate_/m);
    const { exit } = await h.quit();
    expect(exit.code).toBe(0);
    expect(h.stderr).toBe('');
  });

  it('with a missing config file or an unwritable log file: stays up and says so', async () => {
    const f = base.queueFile('Queue/7002.msg', { body: clean('nolog') });
    const missing = CgpHelper.start({ base, config: join(base.dir, 'nope.yaml') });
    helpers.push(missing);
    expect(await missing.request('1', `FILE ${f}`)).toMatch(/^1 REJECTED "/);
    expect(await missing.waitForInfo(/cannot scan/)).toContain('ERR_CONFIG_FILE');
    await missing.quit();

    const h = start({ log: { file: join(base.dir, 'no', 'such', 'dir', 'x.log') } });
    expect(await h.waitForInfo(/cannot open the log file/)).toContain('logging is off');
    expect(await h.request('1', `FILE ${f}`)).toMatch(/^1 ADDHEADER "X-Sandgate-Verdict: clean/);
    await h.quit();
    expect(h.stderr).toBe('');
  });
});
