import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { helperSchema } from '../../src/config/helper.js';
import { HelperSession } from '../../src/helper/helper.js';
import { queueFileBytes } from '../support/cgp.js';
import { tempDir } from '../support/tmp.js';
import { blockedMail, startHarness, type Harness } from './quarantine-harness.js';

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

/** Reads protocol lines from the session's output. */
function lineReader(out: PassThrough) {
  let buf = '';
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  out.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i).replace(/\r$/, ''));
      buf = buf.slice(i + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  return async (prefix: string): Promise<string> => {
    for (;;) {
      const hit = lines.find((l) => l.startsWith(prefix));
      if (hit !== undefined) return hit;
      await new Promise<void>((r) => waiters.push(r));
    }
  };
}

describe('quarantine round trip through the CommuniGate helper', () => {
  it('discarded by the helper -> released into Submitted -> resubmitted -> OK without a new scan', async () => {
    const dir = tempDir();
    const base = join(dir, 'cgp');
    const submitted = join(base, 'Submitted');
    mkdirSync(join(base, 'Queue'), { recursive: true });
    mkdirSync(submitted);
    harness = await startHarness(dir, {
      config: { quarantine: { release: { target: `submitted:${submitted}` } } },
    });
    const h = harness.runtime.config.helper;
    const input = new PassThrough();
    const output = new PassThrough();
    const next = lineReader(output);
    const session = new HelperSession({
      input,
      output,
      settings: {
        baseDir: base,
        deadlineMs: 20_000,
        concurrency: 4,
        maxLineLength: h.maxLineLength,
        maxProtocolVersion: h.maxProtocolVersion,
        replies: { rejectWord: h.rejectWord, addHeaders: h.addHeaders, texts: helperSchema.parse({}).texts },
      },
      core: { evaluator: harness.runtime.evaluator },
      log: harness.runtime.log,
    });
    const done = session.start();
    input.write('1 INTF 4\n');
    await next('1 INTF');

    writeFileSync(
      join(base, 'Queue', '1.msg'),
      queueFileBytes({ sender: 'sender@example.org', recipients: ['rcpt@example.net'], body: blockedMail() }),
    );
    input.write('2 FILE Queue/1.msg\n');
    expect(await next('2 ')).toMatch(/^2 DISCARD/);
    const [item] = await harness.service.list();
    expect(item?.envelope).toMatchObject({ sender: 'sender@example.org', recipients: ['rcpt@example.net'] });
    expect(harness.rules.calls).toBe(1);

    await harness.service.release(item!.id, { by: 'test' });
    const [sub] = readdirSync(submitted);
    const text = readFileSync(join(submitted, sub!), 'latin1');
    // What CommuniGate's PIPE module does: envelope from Return-Path / Envelope-To, those fields removed.
    const lines = text.split('\n');
    const sender = /^Return-Path: <(.*)>$/.exec(lines[0]!)?.[1];
    const rcpts = lines
      .filter((l) => l.startsWith('Envelope-To: '))
      .map((l) => l.slice('Envelope-To: '.length));
    expect(sender).toBe('sender@example.org');
    expect(rcpts).toEqual(['rcpt@example.net']);
    const body = `Received: from [127.0.0.1] by cgp.example.net with PIPE\n${lines.filter((l) => !l.startsWith('Envelope-To: ')).join('\n')}`;
    writeFileSync(
      join(base, 'Queue', '2.msg'),
      queueFileBytes({ sender, recipients: rcpts, module: 'PIPE', body }),
    );
    input.write('3 FILE Queue/2.msg\n');
    expect(await next('3 ')).toMatch(/^3 (OK|ADDHEADER)/);
    expect(harness.rules.calls).toBe(1);
    expect(harness.logs.events('message.verdict').map((v) => v.reason)).toEqual(['malicious', 'released']);

    input.write('4 QUIT\n');
    input.end();
    await done;
  });
});
