/**
 * A file uuencoded in a text body is a risky part of its own for PT Sandbox: with the prefilter
 * on, a text-only message that carries one is not skipped; in attachments granularity the
 * decoded file is what is uploaded, under its own name; in message granularity the message goes.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { directContext } from '../support/memo-harness.js';
import { uuencode } from '../support/embedded-specimens.js';
import {
  makeScanner,
  message,
  openTestState,
  simpleMail,
  testConfig,
  type TestState,
} from '../support/pt-sandbox.js';
import { EICAR } from '../support/specimens.js';

let sb: FakePtSandbox;
let state: TestState;
beforeEach(async () => {
  sb = await startFakePtSandbox();
  state = openTestState();
});
afterEach(async () => {
  await state.close();
  await sb.close();
});

const text = (body: string) => message(simpleMail(`No links here.\n${body}\n`));

describe('PT Sandbox and files embedded in text', () => {
  it('attachments granularity with the prefilter: the decoded file is uploaded, named, and judged', async () => {
    const scanner = makeScanner(
      testConfig(sb.url, { granularity: 'attachments', prefilter: { enabled: true } }),
      state,
    );
    const f = await scanner.scan(
      text(uuencode(EICAR, 'notes.txt')),
      directContext({ deadline: Date.now() + 10_000 }),
    );
    await scanner.close();
    expect(f).toMatchObject({ kind: 'malicious', threats: ['EICAR-Test-File'] });
    expect(sb.tasksCreated()).toBe(1);
    const [task] = [...sb.tasks.values()];
    expect(task?.bytes.equals(EICAR)).toBe(true);
    expect(task?.fileName).toBe('notes.txt');
  });

  it('message granularity with the prefilter: a text-only message with a block is submitted whole', async () => {
    const scanner = makeScanner(testConfig(sb.url, { prefilter: { enabled: true } }), state);
    const plain = await scanner.scan(text('just words'), directContext({ deadline: Date.now() + 10_000 }));
    expect(plain).toEqual({ kind: 'skipped', reason: 'prefilter' });
    const withBlock = await scanner.scan(
      text(uuencode(Buffer.from('harmless bytes'), 'a.dat')),
      directContext({ deadline: Date.now() + 10_000 }),
    );
    await scanner.close();
    expect(withBlock).toMatchObject({ kind: 'clean' });
    expect(sb.tasksCreated()).toBe(1);
    expect([...sb.tasks.values()][0]?.bytes.toString('latin1')).toContain('begin 644 a.dat');
  });
});
