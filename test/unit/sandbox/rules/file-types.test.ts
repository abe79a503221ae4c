import { describe, expect, it } from 'vitest';
import {
  blockedExtension,
  doubleExtension,
  executableKind,
  extensions,
} from '../../../../src/sandbox/rules/file-types.js';
import { StreamSearch } from '../../../../src/sandbox/rules/stream-search.js';
import { EICAR, fakePe } from '../../../support/specimens.js';

const blocked = new Set(['exe', 'scr', 'js']);

describe('file name rules', () => {
  it('reads extensions case-insensitively, ignoring padding spaces and folders', () => {
    expect(extensions('dir/Invoice.PDF   .EXE ')).toEqual(['pdf', 'exe']);
    expect(extensions('.bashrc')).toEqual(['bashrc']);
    expect(extensions('README')).toEqual([]);
  });

  it('finds double extensions only after a decoy extension', () => {
    expect(doubleExtension('invoice.pdf.exe', blocked)).toBe('pdf.exe');
    expect(doubleExtension('scan.jpg.scr', blocked)).toBe('jpg.scr');
    expect(doubleExtension('backup.tar.gz', blocked)).toBeUndefined();
    expect(doubleExtension('jquery.min.js', blocked)).toBeUndefined();
    expect(doubleExtension('report.pdf', blocked)).toBeUndefined();
  });

  it('matches blocked extensions on the last extension only', () => {
    expect(blockedExtension('setup.EXE', blocked)).toBe('exe');
    expect(blockedExtension('exe.txt', blocked)).toBeUndefined();
  });

  it('recognises PE and ELF magic', () => {
    expect(executableKind(fakePe())).toBe('pe');
    const notPe = fakePe();
    notPe.write('XX', 0x80, 'latin1');
    expect(executableKind(notPe)).toBeUndefined();
    expect(
      executableKind(
        Buffer.from('MZ and then plain ASCII text that goes on for a while, more than sixty-four bytes'),
      ),
    ).toBeUndefined();
  });
});

describe('StreamSearch', () => {
  it('finds a pattern split at every position across two and three chunks', () => {
    const data = Buffer.concat([Buffer.from('prefix-'), EICAR, Buffer.from('-suffix')]);
    for (let i = 0; i <= data.length; i++) {
      for (const j of [i, Math.min(data.length, i + 1), Math.min(data.length, i + 30)]) {
        const s = new StreamSearch([EICAR]);
        s.push(data.subarray(0, i));
        s.push(data.subarray(i, j));
        s.push(data.subarray(j));
        expect([i, j, s.matches.has(0)]).toEqual([i, j, true]);
      }
    }
  });

  it('does not match across a gap', () => {
    const s = new StreamSearch([EICAR]);
    s.push(EICAR.subarray(0, 30));
    s.push(Buffer.from('x'));
    s.push(EICAR.subarray(30));
    expect(s.matches.size).toBe(0);
  });
});
