import { describe, expect, it } from 'vitest';
import {
  decodeQuoted,
  encodeCgpString,
  encodeHeaderBlock,
  formatInfo,
  formatReply,
  LineReader,
  MAX_REPLY_BYTES,
  parseCommandLine,
  parseFileArgument,
  sequenceOfTooLongLine,
  TOO_LONG_PREFIX_BYTES,
} from '../../../src/helper/protocol.js';

describe('parseCommandLine', () => {
  it('keeps the sequence token byte for byte, leading zeros included', () => {
    const p = parseCommandLine('00017 FILE Queue/57/1846258457.msg');
    expect(p).toEqual({ ok: true, command: { kind: 'FILE', seq: '00017', path: 'Queue/57/1846258457.msg' } });
  });

  it('parses INTF with and without a version', () => {
    expect(parseCommandLine('1 INTF 5')).toEqual({
      ok: true,
      command: { kind: 'INTF', seq: '1', version: 5 },
    });
    expect(parseCommandLine('1 INTF')).toEqual({
      ok: true,
      command: { kind: 'INTF', seq: '1', version: undefined },
    });
    expect(parseCommandLine('1 INTF x')).toEqual({
      ok: true,
      command: { kind: 'INTF', seq: '1', version: undefined },
    });
  });

  it('accepts QUIT and KEY with or without arguments, tabs and runs of blanks', () => {
    expect(parseCommandLine('9 QUIT')).toEqual({ ok: true, command: { kind: 'QUIT', seq: '9' } });
    expect(parseCommandLine('9\t KEY  abc def')).toEqual({ ok: true, command: { kind: 'KEY', seq: '9' } });
  });

  it('names unknown commands and a sequence number alone', () => {
    expect(parseCommandLine('3 HELLO world')).toEqual({
      ok: true,
      command: { kind: 'unknown', seq: '3', command: 'HELLO' },
    });
    expect(parseCommandLine('3')).toEqual({ ok: true, command: { kind: 'unknown', seq: '3', command: '' } });
  });

  it('refuses lines without a sequence number', () => {
    expect(parseCommandLine('')).toEqual({ ok: false, reason: 'empty' });
    expect(parseCommandLine('   ')).toEqual({ ok: false, reason: 'empty' });
    expect(parseCommandLine('FILE Queue/1.msg')).toEqual({ ok: false, reason: 'no-sequence' });
    expect(parseCommandLine('12a FILE x')).toEqual({ ok: false, reason: 'no-sequence' });
    expect(parseCommandLine('* hello')).toEqual({ ok: false, reason: 'no-sequence' });
    expect(parseCommandLine(`${'1'.repeat(65)} QUIT`)).toEqual({ ok: false, reason: 'no-sequence' });
  });

  it('marks a FILE without a usable path', () => {
    expect(parseCommandLine('4 FILE')).toEqual({
      ok: true,
      command: { kind: 'FILE', seq: '4', path: undefined },
    });
    expect(parseCommandLine('4 FILE "unterminated')).toEqual({
      ok: true,
      command: { kind: 'FILE', seq: '4', path: undefined },
    });
  });
});

describe('parseFileArgument', () => {
  it('takes the first token and ignores the rest', () => {
    expect(parseFileArgument('Queue/1.msg HEADERS more')).toBe('Queue/1.msg');
  });
  it('decodes a quoted path with escapes', () => {
    expect(parseFileArgument('"Queue/a b\\"c.msg" HEADERS')).toBe('Queue/a b"c.msg');
    expect(parseFileArgument('"Queue\\\\57\\\\1.msg"')).toBe('Queue\\57\\1.msg');
  });
  it('refuses bad quoting, empty paths and NUL', () => {
    expect(parseFileArgument('"abc"def')).toBeUndefined();
    expect(parseFileArgument('""')).toBeUndefined();
    expect(parseFileArgument('"a\\q"')).toBeUndefined();
    expect(parseFileArgument('"a\\000b"')).toBeUndefined();
    expect(parseFileArgument('')).toBeUndefined();
  });
});

describe('CGP strings', () => {
  it('encodes quotes, backslashes, tabs, line breaks and control characters', () => {
    expect(encodeCgpString('a"b\\c\td')).toBe('"a\\"b\\\\c\\td"');
    expect(encodeCgpString('l1\r\nl2\nl3\rl4')).toBe('"l1\\el2\\el3\\el4"');
    expect(encodeCgpString('x\u0001y\u007f')).toBe('"x\\001y\\127"');
    expect(encodeCgpString('Привет')).toBe('"Привет"');
  });

  it('round-trips through the decoder', () => {
    const text = 'He said "hi"\\ then\ttab\nnext \u0002 ünï';
    const decoded = decodeQuoted(encodeCgpString(text), 0);
    expect(decoded?.value).toBe(text);
  });

  it('cuts long text at a character boundary to fit the budget', () => {
    const s = encodeCgpString('ж'.repeat(100), 41);
    expect(Buffer.byteLength(s)).toBeLessThanOrEqual(41);
    expect(s.endsWith('..."')).toBe(true);
    expect(s).not.toContain('\uFFFD');
    const esc = encodeCgpString('"'.repeat(100), 20);
    expect(esc).toMatch(/^"(\\")*\.\.\."$/);
  });
});

describe('formatReply', () => {
  it('formats each reply kind', () => {
    expect(formatReply('007', { kind: 'OK' })).toBe('007 OK\n');
    expect(formatReply('1', { kind: 'INTF', version: 4 })).toBe('1 INTF 4\n');
    expect(formatReply('2', { kind: 'DISCARD' })).toBe('2 DISCARD\n');
    expect(formatReply('3', { kind: 'ERROR', text: 'unsupported command' })).toBe(
      '3 ERROR "unsupported command"\n',
    );
    expect(formatReply('4', { kind: 'REJECTED', text: 'try\nlater' })).toBe('4 REJECTED "try\\elater"\n');
    expect(formatReply('5', { kind: 'ADDHEADER', fields: ['X-A: 1', 'X-B: 2\r\n\tcont'] })).toBe(
      '5 ADDHEADER "X-A: 1\\eX-B: 2 cont" OK\n',
    );
  });

  it('never exceeds 4096 bytes and never carries a raw CR or LF inside', () => {
    const long = 'threat-\r\n'.repeat(2000);
    for (const reply of [
      { kind: 'ERROR', text: long },
      { kind: 'REJECTED', text: 'я'.repeat(5000) },
      { kind: 'ADDHEADER', fields: [`X-Sandgate-Verdict: ${long}`, 'X-Sandgate-Mark: v1.abc'] },
    ] as const) {
      const line = formatReply('123456', reply);
      expect(Buffer.byteLength(line)).toBeLessThanOrEqual(MAX_REPLY_BYTES);
      expect(line.indexOf('\n')).toBe(line.length - 1);
      expect(line).not.toContain('\r');
    }
  });

  it('keeps a later header whole and cuts the first one when the block is too long', () => {
    const block = encodeHeaderBlock(
      [`X-Sandgate-Verdict: ${'v'.repeat(5000)}`, 'X-Sandgate-Mark: m1.abcdef'],
      300,
    );
    expect(Buffer.byteLength(block)).toBeLessThanOrEqual(300);
    expect(block.endsWith('...\\eX-Sandgate-Mark: m1.abcdef"')).toBe(true);
  });
});

describe('formatInfo', () => {
  it('is one line starting with "* "', () => {
    expect(formatInfo('started\nnow')).toBe('* started now\n');
    const big = formatInfo('x'.repeat(10_000));
    expect(Buffer.byteLength(big)).toBeLessThanOrEqual(MAX_REPLY_BYTES);
  });
});

describe('LineReader', () => {
  it('splits at LF, strips CR, joins pieces across chunks', () => {
    const r = new LineReader(100);
    expect(r.push(Buffer.from('1 INTF 4\r\n2 FI'))).toEqual([{ kind: 'line', text: '1 INTF 4' }]);
    expect(r.push(Buffer.from('LE a.msg\n\n'))).toEqual([
      { kind: 'line', text: '2 FILE a.msg' },
      { kind: 'line', text: '' },
    ]);
    expect(r.push(Buffer.from('3 QUIT'))).toEqual([]);
    expect(r.end()).toEqual([{ kind: 'line', text: '3 QUIT' }]);
  });

  it('reports a too-long line once and recovers at the next line', () => {
    const r = new LineReader(16);
    const out = [
      ...r.push(Buffer.from('1 FILE ' + 'x'.repeat(30))),
      ...r.push(Buffer.from('y'.repeat(30))),
      ...r.push(Buffer.from('\n2 QUIT\n')),
    ];
    expect(out).toEqual([
      // The prefix is what had arrived when the line became too long.
      { kind: 'too-long', bytes: 67, prefix: '1 FILE ' + 'x'.repeat(30) },
      { kind: 'line', text: '2 QUIT' },
    ]);
  });

  it('keeps a bounded prefix of a too-long line, across chunks', () => {
    const r = new LineReader(4096);
    const out = [
      ...r.push(Buffer.from('  00042 FI')),
      ...r.push(Buffer.from('LE ' + 'q'.repeat(3000))),
      ...r.push(Buffer.from('q'.repeat(2000) + '\n')),
    ];
    expect(out).toHaveLength(1);
    const line = out[0] as { kind: string; bytes: number; prefix: string };
    expect(line.kind).toBe('too-long');
    expect(line.bytes).toBe(5013);
    expect(line.prefix).toBe(('  00042 FILE ' + 'q'.repeat(200)).slice(0, TOO_LONG_PREFIX_BYTES));
  });

  it('counts the limit without the CR of a CRLF', () => {
    const r = new LineReader(4);
    expect(r.push(Buffer.from('1 OK\r\n12345\r\n'))).toEqual([
      { kind: 'line', text: '1 OK' },
      { kind: 'too-long', bytes: 6, prefix: '12345\r' }, // raw bytes, CR included
    ]);
  });
});

describe('sequenceOfTooLongLine', () => {
  it('finds a sequence number of at most 64 digits followed by a blank', () => {
    expect(sequenceOfTooLongLine('3 FILE xxxx')).toBe('3');
    expect(sequenceOfTooLongLine(' \t00017\tFILE x')).toBe('00017');
    expect(sequenceOfTooLongLine(`${'9'.repeat(64)} FILE`)).toBe('9'.repeat(64));
    expect(sequenceOfTooLongLine(`${'9'.repeat(65)} FILE`)).toBeUndefined();
    expect(sequenceOfTooLongLine('9'.repeat(128))).toBeUndefined();
    expect(sequenceOfTooLongLine('3FILE x')).toBeUndefined();
    expect(sequenceOfTooLongLine('x3 FILE')).toBeUndefined();
    expect(sequenceOfTooLongLine('')).toBeUndefined();
  });
});
