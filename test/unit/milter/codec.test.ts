import { describe, expect, it } from 'vitest';
import {
  decodeCommand,
  decodeReply,
  encodeCommand,
  encodeReply,
  frame,
  macroName,
  MAX_PACKET,
  PacketReader,
  SMFIF,
  SMFIP,
  type MilterCommand,
  type MilterReply,
  type Packet,
} from '../../../src/milter/codec.js';
import { isSandgateError } from '../../../src/core/errors.js';

/** Hex of a buffer, for byte-exact comparisons that read well in a failure. */
const hex = (b: Buffer) => b.toString('hex');
const h = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** The packets Postfix 3.7 sends for one small message (lengths and bytes as on the wire). */
const POSTFIX_SESSION: Array<[string, Buffer]> = [
  // OPTNEG: version 6, actions 0x1ff, protocol 0x1fffff
  ['optneg', h('0000000d 4f 00000006 000001ff 001fffff')],
  // MACRO for CONNECT: j=mx.test.local
  ['macro', h('00000012 44 43 6a00 6d782e746573742e6c6f63616c00')],
  // CONNECT: "localhost" NUL, family '4', port 40000, "127.0.0.1" NUL
  ['connect', h('00000018 43 6c6f63616c686f737400 34 9c40 3132372e302e302e3100')],
  // MACRO for MAIL without any pair (Postfix sends one when no macro has a value)
  ['macro-empty', h('00000002 44 4d')],
  // MAIL: "<a@test.local>" NUL "BODY=8BITMIME" NUL
  ['mail', h('0000001e 4d 3c6140746573742e6c6f63616c3e00 424f44593d384249544d494d4500')],
  // HEADER: "Subject" NUL " hi" NUL (HDR_LEADSPC: the space after the colon is kept)
  ['header', h('0000000d 4c 5375626a65637400 20686900')],
  // BODY: "hi\r\n"
  ['body', h('00000005 42 68690d0a')],
  ['eom', h('00000001 45')],
  ['abort', h('00000001 41')],
  ['quit', h('00000001 51')],
];

function readAll(reader: PacketReader, chunks: readonly Buffer[]): Packet[] {
  return chunks.flatMap((c) => reader.push(c));
}

function expectProtocolError(f: () => unknown): void {
  let thrown: unknown;
  try {
    f();
  } catch (err) {
    thrown = err;
  }
  expect(isSandgateError(thrown, 'ERR_MILTER_PROTOCOL')).toBe(true);
}

describe('PacketReader', () => {
  const wire = Buffer.concat(POSTFIX_SESSION.map(([, b]) => b));
  const expected = POSTFIX_SESSION.map(([, b]) => ({
    command: String.fromCharCode(b[4]!),
    payload: hex(b.subarray(5)),
  }));
  const simplify = (ps: Packet[]) => ps.map((p) => ({ command: p.command, payload: hex(p.payload) }));

  it('takes coalesced packets: a whole session in one read', () => {
    expect(simplify(readAll(new PacketReader(), [wire]))).toEqual(expected);
  });

  it('reassembles packets fed one byte at a time', () => {
    const reader = new PacketReader();
    const bytes = [...wire].map((b) => Buffer.from([b]));
    expect(simplify(readAll(reader, bytes))).toEqual(expected);
    expect(reader.pending).toBe(0);
  });

  it('reassembles packets split at every offset of a two-way cut', () => {
    for (let cut = 0; cut <= wire.length; cut++) {
      const got = readAll(new PacketReader(), [wire.subarray(0, cut), wire.subarray(cut)]);
      expect(simplify(got), `cut at ${cut}`).toEqual(expected);
    }
  });

  it('splits the length field itself across reads', () => {
    const body = frame('B', [Buffer.alloc(70_000, 0x61)]);
    const reader = new PacketReader();
    expect(reader.push(body.subarray(0, 2))).toEqual([]);
    expect(reader.push(body.subarray(2, 3))).toEqual([]);
    expect(reader.push(body.subarray(3, 40_000))).toEqual([]);
    const [p] = reader.push(body.subarray(40_000));
    expect(p?.command).toBe('B');
    expect(p?.payload.length).toBe(70_000);
  });

  it('returns a packet that fits in one read as a view of it (no copy)', () => {
    const chunk = frame('B', [Buffer.from('hello')]);
    const [p] = new PacketReader().push(chunk);
    expect(p?.payload.buffer).toBe(chunk.buffer);
  });

  it('refuses a packet longer than the limit as soon as its length is read', () => {
    const reader = new PacketReader(1000);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(1001, 0);
    expectProtocolError(() => reader.push(head));
    expect(MAX_PACKET).toBe(1024 * 1024);
    // The default takes Postfix's largest header (header_size_limit, 100 KiB) with room to spare.
    expect(new PacketReader().push(frame('L', [Buffer.alloc(200_000, 0x61), Buffer.from([0])]))).toHaveLength(
      1,
    );
  });

  it('refuses a zero length (a packet without a command byte)', () => {
    expectProtocolError(() => new PacketReader().push(h('00000000')));
  });
});

describe('decodeCommand', () => {
  const decoded = (b: Buffer) => {
    const [p] = new PacketReader().push(b);
    return decodeCommand(p!);
  };

  it('decodes what Postfix sends, byte for byte', () => {
    const m = new Map(POSTFIX_SESSION);
    expect(decoded(m.get('optneg')!)).toEqual({
      kind: 'optneg',
      version: 6,
      actions: 0x1ff,
      protocol: 0x1fffff,
    });
    expect(decoded(m.get('macro')!)).toEqual({
      kind: 'macro',
      stage: 'C',
      macros: new Map([['j', 'mx.test.local']]),
    });
    expect(decoded(m.get('connect')!)).toEqual({
      kind: 'connect',
      hostname: 'localhost',
      family: 'inet',
      port: 40000,
      address: '127.0.0.1',
    });
    expect(decoded(m.get('mail')!)).toEqual({ kind: 'mail', args: ['<a@test.local>', 'BODY=8BITMIME'] });
    const header = decoded(m.get('header')!) as Extract<MilterCommand, { kind: 'header' }>;
    expect(header.name.toString()).toBe('Subject');
    expect(header.value.toString()).toBe(' hi');
    expect(decoded(m.get('eom')!)).toEqual({ kind: 'eom', chunk: Buffer.alloc(0) });
    expect(decoded(m.get('abort')!)).toEqual({ kind: 'abort' });
    expect(decoded(m.get('quit')!)).toEqual({ kind: 'quit' });
  });

  it('takes a MACRO packet without pairs', () => {
    expect(decoded(h('00000002 44 4d'))).toEqual({ kind: 'macro', stage: 'M', macros: new Map() });
  });

  it('names macros without braces', () => {
    const m = decoded(
      encodeCommand({ kind: 'macro', stage: 'C', macros: new Map([['daemon_name', 'smtpd']]) }),
    );
    expect(
      encodeCommand({ kind: 'macro', stage: 'C', macros: new Map([['daemon_name', 'x']]) }).toString(
        'latin1',
      ),
    ).toContain('{daemon_name}\0x\0');
    expect(m).toEqual({ kind: 'macro', stage: 'C', macros: new Map([['daemon_name', 'smtpd']]) });
    expect(macroName('{i}')).toBe('i');
    expect(macroName('j')).toBe('j');
  });

  it('decodes IPv6, unix and unknown clients, and drops an IPv6: prefix', () => {
    const c = (family: 'inet6' | 'unix' | 'unknown', address: string, port = 25) =>
      decoded(encodeCommand({ kind: 'connect', hostname: 'h', family, port, address }));
    expect(c('inet6', 'IPv6:2001:db8::1')).toMatchObject({
      family: 'inet6',
      address: '2001:db8::1',
      port: 25,
    });
    expect(c('unix', '/var/run/x')).toMatchObject({ family: 'unix', address: '/var/run/x', port: 0 });
    // Nothing follows the family byte 'U'.
    expect(
      hex(encodeCommand({ kind: 'connect', hostname: 'h', family: 'unknown', port: 0, address: '' })),
    ).toBe('0000000443680055');
    expect(c('unknown', '')).toEqual({
      kind: 'connect',
      hostname: 'h',
      family: 'unknown',
      port: 0,
      address: '',
    });
  });

  it('keeps raw 8-bit bytes of header values', () => {
    const value = Buffer.from(' Grüße \xff', 'latin1');
    const hd = decoded(encodeCommand({ kind: 'header', name: Buffer.from('Subject'), value })) as Extract<
      MilterCommand,
      { kind: 'header' }
    >;
    expect(hd.value.equals(value)).toBe(true);
  });

  it('keeps an empty header value', () => {
    const hd = decoded(h('0000000a 4c 582d456d70747900 00')) as Extract<MilterCommand, { kind: 'header' }>;
    expect(hd.name.toString()).toBe('X-Empty');
    expect(hd.value.length).toBe(0);
  });

  it('refuses malformed packets with ERR_MILTER_PROTOCOL', () => {
    const bad: Array<[string, Buffer]> = [
      ['short OPTNEG', h('00000005 4f 00000006')],
      ['MACRO without its command byte', h('00000001 44')],
      ['CONNECT without a family', h('00000003 43 6800')],
      ['CONNECT with an unknown family', h('00000004 43 6800 5a')],
      ['CONNECT without a port', h('00000005 43 6800 34 9c')],
      ['HELO without NUL', h('00000003 48 6869')],
      ['MAIL without any string', h('00000001 4d')],
      ['HEADER with one string', h('00000009 4c 5375626a65637400')],
      ['HEADER without a name', h('00000004 4c 00 6800')],
      ['unknown command', h('00000001 7a')],
    ];
    for (const [what, b] of bad) {
      const [p] = new PacketReader().push(b);
      expect(() => decodeCommand(p!), what).toThrow();
      expectProtocolError(() => decodeCommand(p!));
    }
  });

  it('round-trips every command', () => {
    const all: MilterCommand[] = [
      { kind: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff },
      { kind: 'macro', stage: 'M', macros: new Map([['i', 'ABC123']]) },
      { kind: 'connect', hostname: 'c.example', family: 'inet', port: 2525, address: '192.0.2.1' },
      { kind: 'helo', name: 'c.example' },
      { kind: 'mail', args: ['<a@b>', 'SIZE=10'] },
      { kind: 'rcpt', args: ['<c@d>'] },
      { kind: 'data' },
      { kind: 'header', name: Buffer.from('A'), value: Buffer.from(' b') },
      { kind: 'eoh' },
      { kind: 'body', chunk: Buffer.from('x\r\n') },
      { kind: 'eom', chunk: Buffer.alloc(0) },
      { kind: 'abort' },
      { kind: 'quit' },
      { kind: 'quitNc' },
      { kind: 'unknown', line: 'XYZZY' },
    ];
    for (const c of all) expect(decoded(encodeCommand(c))).toEqual(c);
  });
});

describe('encodeReply', () => {
  it('encodes the replies we send, byte for byte', () => {
    const cases: Array<[MilterReply, string]> = [
      [{ kind: 'continue' }, '0000000163'],
      [{ kind: 'accept' }, '0000000161'],
      [{ kind: 'discard' }, '0000000164'],
      [{ kind: 'tempfail' }, '0000000174'],
      [{ kind: 'reject' }, '0000000172'],
      [{ kind: 'progress' }, '0000000170'],
      [
        {
          kind: 'optneg',
          version: 6,
          actions: SMFIF.ADDHDRS | SMFIF.CHGHDRS,
          protocol: SMFIP.NR_HDR | SMFIP.HDR_LEADSPC,
        },
        '0000000d4f' + '00000006' + '00000011' + '00100080',
      ],
      [
        { kind: 'replycode', text: '550 5.7.1 no' },
        '0000000e79' + Buffer.from('550 5.7.1 no\0').toString('hex'),
      ],
      [{ kind: 'addHeader', name: 'X-A', value: ' b' }, '0000000868' + '582d4100' + '206200'],
      [
        { kind: 'insHeader', index: 1, name: 'X-A', value: ' b' },
        '0000000c69' + '00000001' + '582d4100' + '206200',
      ],
      // An empty value deletes the field.
      [
        { kind: 'chgHeader', index: 2, name: 'X-A', value: '' },
        '0000000a6d' + '00000002' + '582d4100' + '00',
      ],
    ];
    for (const [reply, bytes] of cases) expect(hex(encodeReply(reply)), reply.kind).toBe(bytes);
  });

  it('puts SETSYMLIST lists at the end of the OPTNEG reply', () => {
    const r: MilterReply = { kind: 'optneg', version: 6, actions: 0x100, protocol: 0, macros: [[5, 'i']] };
    expect(hex(encodeReply(r))).toBe(
      '000000134f' + '00000006' + '00000100' + '00000000' + '00000005' + '6900',
    );
    const [p] = new PacketReader().push(encodeReply(r));
    expect(decodeReply(p!)).toEqual(r);
  });

  it('round-trips every reply', () => {
    const all: MilterReply[] = [
      { kind: 'accept' },
      { kind: 'continue' },
      { kind: 'discard' },
      { kind: 'reject' },
      { kind: 'tempfail' },
      { kind: 'skip' },
      { kind: 'progress' },
      { kind: 'shutdown' },
      { kind: 'connFail' },
      { kind: 'replycode', text: '451 4.7.0 later' },
      { kind: 'addHeader', name: 'X-A', value: Buffer.from(' 1') },
      { kind: 'insHeader', index: 0, name: 'X-A', value: Buffer.from(' 1') },
      { kind: 'chgHeader', index: 3, name: 'X-A', value: Buffer.alloc(0) },
      { kind: 'addRcpt', address: '<x@y>' },
      { kind: 'addRcptPar', address: '<x@y>', args: 'NOTIFY=NEVER' },
      { kind: 'delRcpt', address: '<x@y>' },
      { kind: 'chgFrom', address: '<x@y>', args: 'RET=HDRS' },
      { kind: 'chgFrom', address: '<x@y>' },
      { kind: 'replBody', chunk: Buffer.from('new body\r\n') },
      { kind: 'quarantine', reason: 'held' },
    ];
    for (const r of all) {
      const [p] = new PacketReader().push(encodeReply(r));
      expect(decodeReply(p!)).toEqual(r);
    }
  });
});
