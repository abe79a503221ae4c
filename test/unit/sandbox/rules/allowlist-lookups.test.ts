import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rulesSchema } from '../../../../src/config/scanners.js';
import { silentLogger } from '../../../../src/core/logger.js';
import type { Finding } from '../../../../src/core/outcome.js';
import type { ScanContext } from '../../../../src/core/scanner.js';
import { RulesScanner } from '../../../../src/sandbox/rules/rules-scanner.js';
import { buildMessage, chunkedSource, EICAR, messageSource } from '../../../support/specimens.js';

/**
 * The rules scanner asks the allowlists only when the answer can change the verdict. These cases
 * pin down that the answer is still the one a lookup of every part would give.
 */
let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'sg-rules-allow-'));
});
afterEach(() => {
  expect(readdirSync(spoolDir)).toEqual([]);
  rmSync(spoolDir, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** An allowlist that records what it was asked. */
function recordingList(allowed: readonly string[]) {
  const asked: string[] = [];
  return {
    asked,
    has(sha256: string) {
      asked.push(sha256);
      return Promise.resolve(allowed.includes(sha256));
    },
    revision: () => Promise.resolve('1'),
  };
}

function ctx(): ScanContext {
  return {
    signal: new AbortController().signal,
    deadline: Date.now() + 30_000,
    log: silentLogger,
    memo: { run: (_k, compute) => compute() },
    now: Date.now,
  };
}

function scan(bytes: Buffer, list: ReturnType<typeof recordingList>, chunkSize?: number): Promise<Finding> {
  return new RulesScanner(rulesSchema.parse({}), { spoolDir, allowList: list }).scan(
    chunkSize === undefined ? messageSource(bytes) : chunkedSource(bytes, chunkSize),
    ctx(),
  );
}

/**
 * A multipart message with EICAR in its raw bytes but in no decoded part: in the preamble, in the
 * epilogue, or in the body of a later base64 part (where it decodes to other bytes). `attachment`
 * is the first part.
 */
function eicarOutsideParts(attachment: Buffer, where: 'preamble' | 'epilogue' | 'base64-body'): Buffer {
  const b = 'sg-boundary';
  const eicar = EICAR.toString('latin1');
  return Buffer.from(
    [
      'From: a@example.org',
      'To: b@example.net',
      'Subject: raw only',
      'MIME-Version: 1.0',
      `Content-Type: multipart/mixed; boundary="${b}"`,
      '',
      where === 'preamble' ? eicar : 'preamble',
      `--${b}`,
      'Content-Type: application/octet-stream',
      'Content-Disposition: attachment; filename="notes.txt"',
      '',
      attachment.toString('latin1'),
      `--${b}`,
      'Content-Type: text/plain',
      '',
      // Enough bytes between that the walk inspects the first part before reading what follows.
      `${'filler '.repeat(10)}\r\n`.repeat(30_000),
      `--${b}`,
      'Content-Type: text/plain',
      'Content-Transfer-Encoding: base64',
      '',
      where === 'base64-body' ? eicar : 'aGVsbG8=',
      `--${b}--`,
      where === 'epilogue' ? eicar : 'epilogue',
      '',
    ].join('\r\n'),
    'latin1',
  );
}

describe('RulesScanner allowlist lookups', () => {
  it('does not ask the allowlist about a clean part', async () => {
    const list = recordingList([]);
    expect((await scan(buildMessage({ text: 'nothing to see\r\n' }), list)).kind).toBe('clean');
    expect(list.asked).toEqual([]);
  });

  it('excuses a part with a hit when its hash is allowed', async () => {
    const body = Buffer.concat([EICAR, Buffer.from('\r\n')]);
    const msg = buildMessage({ attachments: [{ filename: 'sample.txt', content: body }] });
    expect((await scan(msg, recordingList([]))).kind).toBe('malicious');
    const list = recordingList([sha(body)]);
    expect((await scan(msg, list)).kind).toBe('clean');
    expect(list.asked).toContain(sha(body));
  });

  // Read in chunks, EICAR in the later base64 part is seen after the first part was
  // inspected without a lookup: the scanner then looks the parts up after the walk.
  it.each([
    ['preamble', undefined],
    ['epilogue', undefined],
    ['epilogue', 64 * 1024],
    ['base64-body', undefined],
    ['base64-body', 64 * 1024],
  ] as const)(
    'lets an allowed part excuse EICAR seen only in the raw message (%s, chunks of %s)',
    async (where, chunk) => {
      const attachment = Buffer.from('released by an operator');
      const msg = eicarOutsideParts(attachment, where);
      const notAllowed = await scan(msg, recordingList([]), chunk);
      expect(notAllowed.kind).toBe('malicious');
      expect(notAllowed.kind === 'malicious' && notAllowed.details?.part).toBe('raw');
      const list = recordingList([sha(attachment)]);
      expect((await scan(msg, list, chunk)).kind).toBe('clean');
      expect(list.asked).toContain(sha(attachment));
    },
  );
});

describe('an allowlist that cannot be asked (the state backend down)', () => {
  it('fails the scan (the policy tempfails it), never a malformed-MIME verdict', async () => {
    // A node-postgres error: its SQLSTATE in `code`, as the walker's parse errors carry theirs.
    const down = Object.assign(new Error('the database system is not yet accepting connections'), {
      code: '57P03',
    });
    const list = {
      has: () => Promise.reject(down),
      revision: () => Promise.resolve('1'),
    };
    const infected = buildMessage({ attachments: [{ filename: 'eicar.com', content: EICAR }] });
    const scanner = new RulesScanner(rulesSchema.parse({}), { spoolDir, allowList: list });
    await expect(scanner.scan(messageSource(infected), ctx())).rejects.toBe(down);
  });
});
