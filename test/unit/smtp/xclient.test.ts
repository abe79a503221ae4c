import { describe, expect, it } from 'vitest';
import { xclientLines, xtext } from '../../../src/smtp/next-hop.js';

const ALL = new Set(['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN', 'DESTADDR', 'DESTPORT']);

describe('xtext (RFC 3461)', () => {
  it('leaves printable ASCII alone and encodes "+", "=", space, controls and non-ASCII bytes as +HH', () => {
    expect(xtext('client.example')).toBe('client.example');
    expect(xtext('[UNAVAILABLE]')).toBe('[UNAVAILABLE]');
    expect(xtext('IPV6:2001:db8::1')).toBe('IPV6:2001:db8::1');
    expect(xtext('a+b=c d')).toBe('a+2Bb+3Dc+20d');
    expect(xtext('x\r\ny')).toBe('x+0D+0Ay');
    expect(xtext('é')).toBe('+C3+A9');
  });
});

describe('xclientLines', () => {
  it('sends only the attributes the next hop lists, in the order given, and skips empty values', () => {
    const attrs = new Map([
      ['NAME', 'client.example'],
      ['ADDR', '192.0.2.9'],
      ['PORT', '4242'],
      ['PROTO', 'ESMTP'],
      ['HELO', 'helo example'],
      ['LOGIN', ''],
      ['DESTADDR', '192.0.2.1'],
    ]);
    expect(xclientLines(attrs, new Set(['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN']))).toEqual([
      'XCLIENT NAME=client.example ADDR=192.0.2.9 PORT=4242 PROTO=ESMTP HELO=helo+20example',
    ]);
    expect(xclientLines(attrs, new Set(['ADDR']))).toEqual(['XCLIENT ADDR=192.0.2.9']);
    expect(xclientLines(attrs, new Set(['IDENT']))).toEqual([]);
  });

  it('splits into several commands of at most 512 octets with CRLF, and sends a value that fits none as [UNAVAILABLE]', () => {
    const name = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(60)}.example`;
    const attrs = new Map([
      ['NAME', name],
      ['ADDR', '192.0.2.9'],
      ['HELO', 'h'.repeat(255)],
      ['LOGIN', '+'.repeat(200)],
    ]);
    const lines = xclientLines(attrs, ALL);
    expect(lines.length).toBe(2);
    for (const l of lines) expect(l.length + 2).toBeLessThanOrEqual(512);
    expect(lines[0]).toBe(`XCLIENT NAME=${name} ADDR=192.0.2.9`);
    expect(lines[1]).toBe(`XCLIENT HELO=${'h'.repeat(255)} LOGIN=[UNAVAILABLE]`);
  });
});
