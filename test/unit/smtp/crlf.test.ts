import { describe, expect, it } from 'vitest';
import { LineNormaliser } from '../../../src/core/line-endings.js';
import { DotStuffer, toDataWire } from '../../../src/smtp/crlf.js';

async function wire(chunks: string[], options: { crlf?: boolean } = {}): Promise<string> {
  let out = '';
  for await (const c of toDataWire(
    (async function* () {
      await Promise.resolve();
      for (const x of chunks) yield Buffer.from(x, 'latin1');
    })(),
    options,
  ))
    out += c.toString('latin1');
  return out;
}

function normalise(chunks: string[]): string {
  const n = new LineNormaliser(false);
  return (
    chunks.map((c) => n.push(Buffer.from(c, 'latin1')).toString('latin1')).join('') +
    n.end().toString('latin1')
  );
}

describe('LineNormaliser', () => {
  it('turns bare LF and bare CR into CRLF and leaves CRLF alone', () => {
    expect(normalise(['a\nb\rc\r\nd'])).toBe('a\r\nb\r\nc\r\nd');
  });
  it('handles a CRLF split across chunks, and a trailing CR', () => {
    expect(normalise(['a\r', '\nb\r'])).toBe('a\r\nb\r\n');
    expect(normalise(['a\r', 'b'])).toBe('a\r\nb');
  });
  it('keeps every other byte as it is (8-bit and NUL included)', () => {
    const bytes = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i))
      .join('')
      .replace(/[\r\n]/g, '');
    expect(normalise([bytes])).toBe(bytes);
  });
});

describe('toDataWire', () => {
  it('dot-stuffs line-leading dots, including the first line and across chunks, and terminates', async () => {
    expect(await wire(['.a\r\nb\r\n', '.c\r\n'])).toBe('..a\r\nb\r\n..c\r\n.\r\n');
    expect(await wire(['x\r', '\n', '.y'])).toBe('x\r\n..y\r\n.\r\n');
  });
  it('closes an open last line before the final dot', async () => {
    expect(await wire(['no newline'])).toBe('no newline\r\n.\r\n');
    expect(await wire([])).toBe('.\r\n');
  });
  it('defuses every known smuggling terminator', async () => {
    for (const t of ['\n.\n', '\r.\r', '\n.\r\n', '\r\n.\n', '\r\n.\r', '\r.\n']) {
      const out = await wire([`a${t}MAIL FROM:<x@y>\r\n`]);
      // The only CRLF.CRLF is the real terminator at the end.
      expect(out.indexOf('\r\n.\r\n')).toBe(out.length - 5);
      expect(out).not.toMatch(/[^\r]\n|\r[^\n]/);
    }
  });
});

describe('the fast path for chunks that are already clean', () => {
  // An independent statement of the rules, on the whole text at once.
  const oracleNormalise = (s: string) => s.replace(/\r\n|\r|\n/g, '\r\n');
  const oracleWire = (s: string) => {
    const n = oracleNormalise(s).replace(/(^|\r\n)\./g, '$1..');
    return n + (n === '' || n.endsWith('\r\n') ? '.\r\n' : '\r\n.\r\n');
  };
  // Deterministic pseudo-random chunks of a small alphabet, so clean and unclean chunks, CRLFs
  // split across chunks and line-leading dots all occur many times.
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    // The high bits: an LCG's low bits repeat with a short period (some inputs would never occur).
    return Math.floor((seed / 2147483648) * n);
  };
  const pieces = ['a', 'bc', '\r\n', '\r\n', '\r\n.', '.', '\r', '\n', 'x\r\ny\r\n'];
  const sample = () =>
    Array.from({ length: 1 + rnd(6) }, () =>
      Array.from({ length: rnd(8) }, () => pieces[rnd(pieces.length)]).join(''),
    );

  it('normalises exactly like the byte-by-byte rules, whichever path each chunk takes', () => {
    for (let i = 0; i < 2000; i++) {
      const chunks = sample();
      expect(normalise(chunks)).toBe(oracleNormalise(chunks.join('')));
    }
  });

  it('dot-stuffs and terminates exactly like the rules, whichever path each chunk takes', async () => {
    for (let i = 0; i < 1000; i++) {
      const chunks = sample();
      expect(await wire(chunks)).toBe(oracleWire(chunks.join('')));
    }
  });

  it('hands a clean chunk on as it is, without copying it', () => {
    const chunk = Buffer.from('Subject: x\r\n\r\nbody line\r\nmore\r\n');
    expect(new LineNormaliser(true).push(chunk)).toBe(chunk);
    expect(new LineNormaliser(false).push(chunk)).toBe(chunk);
  });

  it('with input already CRLF-normalised, dot-stuffing alone gives the same wire bytes', async () => {
    for (let i = 0; i < 1000; i++) {
      // Normalised text, cut again at arbitrary points (a CRLF or an LF "." may be split).
      const text = oracleNormalise(sample().join(''));
      const cuts = [
        0,
        ...Array.from({ length: rnd(5) }, () => rnd(text.length + 1)).sort((a, b) => a - b),
        text.length,
      ];
      const chunks = cuts.slice(1).map((end, k) => text.slice(cuts[k], end));
      expect(await wire(chunks, { crlf: true })).toBe(oracleWire(text));
    }
  });

  it('hands a chunk with no line-leading dot on as it is, without copying it', () => {
    const chunk = Buffer.from('Subject: x\r\n\r\nbody line\r\nmore\r\n');
    expect(new DotStuffer().push(chunk)).toBe(chunk);
  });
});
