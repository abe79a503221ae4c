/**
 * The milter wire protocol, version 6 (libmilter's mfdef.h; Postfix's milter8.c): framing, the
 * reassembly of packets from split or coalesced reads, and every command and reply encoded and
 * decoded. Pure: no I/O. A packet is a uint32 big-endian length (the command byte plus its
 * payload), the command byte, and the payload; strings end in NUL, integers are uint32 BE.
 */
import { SandgateError } from '../core/errors.js';

export const MILTER_VERSION = 6;

/**
 * The largest packet accepted (length field). libmilter's default is 64 KiB, but Postfix sends each
 * header field as one packet and allows header_size_limit (100 KiB) and more: 1 MiB is generous
 * without letting a peer make us buffer without bound.
 */
export const MAX_PACKET = 1024 * 1024;

/** Commands, MTA -> filter (SMFIC_*). */
export const SMFIC = {
  ABORT: 'A',
  BODY: 'B',
  CONNECT: 'C',
  MACRO: 'D',
  BODYEOB: 'E',
  HELO: 'H',
  QUIT_NC: 'K',
  HEADER: 'L',
  MAIL: 'M',
  EOH: 'N',
  OPTNEG: 'O',
  QUIT: 'Q',
  RCPT: 'R',
  DATA: 'T',
  UNKNOWN: 'U',
} as const;

/** Replies and edits, filter -> MTA (SMFIR_*). */
export const SMFIR = {
  ADDRCPT: '+',
  DELRCPT: '-',
  ADDRCPT_PAR: '2',
  SHUTDOWN: '4',
  ACCEPT: 'a',
  REPLBODY: 'b',
  CONTINUE: 'c',
  DISCARD: 'd',
  CHGFROM: 'e',
  CONN_FAIL: 'f',
  ADDHEADER: 'h',
  INSHEADER: 'i',
  SETSYMLIST: 'l',
  CHGHEADER: 'm',
  PROGRESS: 'p',
  QUARANTINE: 'q',
  REJECT: 'r',
  SKIP: 's',
  TEMPFAIL: 't',
  REPLYCODE: 'y',
  OPTNEG: 'O',
} as const;

/** Actions the filter may take (SMFIF_*), negotiated in OPTNEG. */
export const SMFIF = {
  ADDHDRS: 0x1,
  CHGBODY: 0x2,
  ADDRCPT: 0x4,
  DELRCPT: 0x8,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
} as const;

/** Protocol steps the filter does not want (SMFIP_NO*) or will not answer (SMFIP_NR_*), and options. */
export const SMFIP = {
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  SKIP: 0x400,
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  HDR_LEADSPC: 0x100000,
} as const;

/** Macro stages of a SETSYMLIST list in the OPTNEG reply (SMFIM_*). */
export const SMFIM = { CONNECT: 0, HELO: 1, ENVFROM: 2, ENVRCPT: 3, DATA: 4, EOM: 5, EOH: 6 } as const;

/** A malformed, oversized or unexpected packet: the connection cannot go on. */
export class MilterProtocolError extends SandgateError {
  constructor(message: string, details: Record<string, string | number> = {}) {
    super('ERR_MILTER_PROTOCOL', message, { details });
  }
}

/** One packet off the wire: its command byte (as a one-character string) and payload. */
export interface Packet {
  readonly command: string;
  readonly payload: Buffer;
}

/**
 * Reassembles packets from socket reads of any size: a packet split over several reads, several
 * packets in one read, or both. A packet that fits in one read is returned as a view of it, with
 * no copy. Throws MilterProtocolError for a zero length (no command byte) or a length above
 * `maxPacket`; the caller then closes the connection (the stream cannot be resynchronised).
 */
export class PacketReader {
  private readonly parts: Buffer[] = [];
  private have = 0;
  /** Bytes of the packet being collected, length field included; -1 until its length is known. */
  private need = -1;

  constructor(private readonly maxPacket = MAX_PACKET) {}

  /** Bytes held that do not make a whole packet yet. */
  get pending(): number {
    return this.have;
  }

  push(chunk: Buffer): Packet[] {
    const out: Packet[] = [];
    if (chunk.length === 0) return out;
    this.parts.push(chunk);
    this.have += chunk.length;
    for (;;) {
      if (this.need < 0) {
        if (this.have < 4) break;
        const length = this.peekLength();
        if (length === 0) throw new MilterProtocolError('a packet of length 0 (no command byte)');
        if (length > this.maxPacket) {
          throw new MilterProtocolError(`a packet of ${length} bytes is larger than ${this.maxPacket}`, {
            length,
            limit: this.maxPacket,
          });
        }
        this.need = 4 + length;
      }
      if (this.have < this.need) break;
      const packet = this.take(this.need);
      this.need = -1;
      out.push({ command: String.fromCharCode(packet[4] as number), payload: packet.subarray(5) });
    }
    return out;
  }

  private peekLength(): number {
    const first = this.parts[0] as Buffer;
    if (first.length >= 4) return first.readUInt32BE(0);
    return this.take(4, true).readUInt32BE(0);
  }

  /** The next `n` bytes; with `peek`, left in place. */
  private take(n: number, peek = false): Buffer {
    const first = this.parts[0] as Buffer;
    if (first.length >= n) {
      if (peek) return first.subarray(0, n);
      const out = first.subarray(0, n);
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      this.have -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let o = 0;
    let i = 0;
    while (o < n) {
      const part = this.parts[i] as Buffer;
      const use = Math.min(part.length, n - o);
      part.copy(out, o, 0, use);
      o += use;
      if (!peek) {
        if (use === part.length) {
          this.parts.shift();
          continue;
        }
        this.parts[i] = part.subarray(use);
      }
      i++;
    }
    if (!peek) this.have -= n;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Commands (MTA -> filter)

export type AddressFamily = 'inet' | 'inet6' | 'unix' | 'unknown';

export type MilterCommand =
  | { readonly kind: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number }
  | {
      readonly kind: 'macro';
      /** The command the macros belong to (SMFIC_*), e.g. 'C' or 'M'. */
      readonly stage: string;
      /** Names without braces ({daemon_name} -> daemon_name); may be empty. */
      readonly macros: ReadonlyMap<string, string>;
    }
  | {
      readonly kind: 'connect';
      readonly hostname: string;
      readonly family: AddressFamily;
      /** 0 for unix and unknown. */
      readonly port: number;
      /** The client address ('' when unknown); an "IPv6:" prefix is removed. */
      readonly address: string;
    }
  | { readonly kind: 'helo'; readonly name: string }
  /** MAIL and RCPT: args[0] is the address as typed (`<a@b>`), then the ESMTP parameters verbatim. */
  | { readonly kind: 'mail'; readonly args: readonly string[] }
  | { readonly kind: 'rcpt'; readonly args: readonly string[] }
  | { readonly kind: 'data' }
  /** A header field: name and value as raw bytes (the value with its leading space under HDR_LEADSPC). */
  | { readonly kind: 'header'; readonly name: Buffer; readonly value: Buffer }
  | { readonly kind: 'eoh' }
  | { readonly kind: 'body'; readonly chunk: Buffer }
  /** End of message; libmilter lets it carry a last body chunk (Postfix sends none). */
  | { readonly kind: 'eom'; readonly chunk: Buffer }
  | { readonly kind: 'abort' }
  | { readonly kind: 'quit' }
  | { readonly kind: 'quitNc' }
  | { readonly kind: 'unknown'; readonly line: string };

const FAMILIES: Readonly<Record<string, AddressFamily>> = {
  '4': 'inet',
  '6': 'inet6',
  L: 'unix',
  U: 'unknown',
};
const FAMILY_BYTES: Readonly<Record<AddressFamily, string>> = {
  inet: '4',
  inet6: '6',
  unix: 'L',
  unknown: 'U',
};

/** Splits a payload of NUL-terminated strings; a missing final NUL is malformed. */
function nulStrings(payload: Buffer, what: string): Buffer[] {
  if (payload.length === 0) return [];
  if (payload[payload.length - 1] !== 0) {
    throw new MilterProtocolError(`${what}: a string is not NUL-terminated`, { command: what });
  }
  const out: Buffer[] = [];
  let from = 0;
  for (let nul = payload.indexOf(0); nul !== -1; nul = payload.indexOf(0, from)) {
    out.push(payload.subarray(from, nul));
    from = nul + 1;
  }
  return out;
}

function needStrings(payload: Buffer, what: string, count: number): Buffer[] {
  const s = nulStrings(payload, what);
  if (s.length < count) {
    throw new MilterProtocolError(`${what}: ${count} strings expected, got ${s.length}`, { command: what });
  }
  return s;
}

/** Macro names as Postfix and Sendmail send them ({daemon_name}, j) without the braces. */
export function macroName(name: string): string {
  return name.length > 2 && name.startsWith('{') && name.endsWith('}') ? name.slice(1, -1) : name;
}

/** Decodes one command packet from the MTA. Throws MilterProtocolError when it is malformed. */
export function decodeCommand(packet: Packet): MilterCommand {
  const p = packet.payload;
  switch (packet.command) {
    case SMFIC.OPTNEG:
      if (p.length < 12) throw new MilterProtocolError('OPTNEG: shorter than 12 bytes', { length: p.length });
      return {
        kind: 'optneg',
        version: p.readUInt32BE(0),
        actions: p.readUInt32BE(4),
        protocol: p.readUInt32BE(8),
      };
    case SMFIC.MACRO: {
      if (p.length < 1) throw new MilterProtocolError('MACRO: no command byte');
      // A MACRO packet may carry no pairs at all (Postfix sends one when no macro has a value).
      const strings = nulStrings(p.subarray(1), 'MACRO');
      const macros = new Map<string, string>();
      for (let i = 0; i < strings.length; i += 2) {
        macros.set(
          macroName((strings[i] as Buffer).toString('utf8')),
          strings[i + 1]?.toString('utf8') ?? '',
        );
      }
      return { kind: 'macro', stage: String.fromCharCode(p[0] as number), macros };
    }
    case SMFIC.CONNECT: {
      const nul = p.indexOf(0);
      if (nul < 0 || nul + 1 >= p.length) throw new MilterProtocolError('CONNECT: no host name or family');
      const hostname = p.subarray(0, nul).toString('utf8');
      const familyByte = String.fromCharCode(p[nul + 1] as number);
      const family = FAMILIES[familyByte];
      if (family === undefined)
        throw new MilterProtocolError(`CONNECT: unknown address family "${familyByte}"`);
      if (family === 'unknown') return { kind: 'connect', hostname, family, port: 0, address: '' };
      if (p.length < nul + 4) throw new MilterProtocolError('CONNECT: no port');
      const port = p.readUInt16BE(nul + 2);
      const [addr] = needStrings(p.subarray(nul + 4), 'CONNECT', 1);
      const address = (addr as Buffer).toString('utf8').replace(/^IPv6:/i, '');
      return { kind: 'connect', hostname, family, port: family === 'unix' ? 0 : port, address };
    }
    case SMFIC.HELO:
      return { kind: 'helo', name: (needStrings(p, 'HELO', 1)[0] as Buffer).toString('utf8') };
    case SMFIC.MAIL:
    case SMFIC.RCPT: {
      const what = packet.command === SMFIC.MAIL ? 'MAIL' : 'RCPT';
      const args = needStrings(p, what, 1).map((b) => b.toString('utf8'));
      return { kind: what === 'MAIL' ? 'mail' : 'rcpt', args };
    }
    case SMFIC.HEADER: {
      const [name, value] = needStrings(p, 'HEADER', 2) as [Buffer, Buffer];
      if (name.length === 0) throw new MilterProtocolError('HEADER: empty field name');
      return { kind: 'header', name, value };
    }
    case SMFIC.BODY:
      return { kind: 'body', chunk: p };
    case SMFIC.BODYEOB:
      return { kind: 'eom', chunk: p };
    case SMFIC.DATA:
      return { kind: 'data' };
    case SMFIC.EOH:
      return { kind: 'eoh' };
    case SMFIC.ABORT:
      return { kind: 'abort' };
    case SMFIC.QUIT:
      return { kind: 'quit' };
    case SMFIC.QUIT_NC:
      return { kind: 'quitNc' };
    case SMFIC.UNKNOWN:
      return { kind: 'unknown', line: (nulStrings(p, 'UNKNOWN')[0] ?? Buffer.alloc(0)).toString('utf8') };
    default:
      throw new MilterProtocolError(`unknown command byte 0x${packet.command.charCodeAt(0).toString(16)}`, {
        command: packet.command.charCodeAt(0),
      });
  }
}

type Bytes = string | Buffer;
const bytes = (b: Bytes): Buffer => (typeof b === 'string' ? Buffer.from(b, 'utf8') : b);
const NUL = Buffer.from([0]);
const cstr = (b: Bytes): Buffer[] => [bytes(b), NUL];
function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** One packet: length, command byte, payload parts. */
export function frame(command: string, parts: readonly Buffer[] = []): Buffer {
  let length = 1;
  for (const p of parts) length += p.length;
  const out = Buffer.allocUnsafe(4 + length);
  out.writeUInt32BE(length, 0);
  out[4] = command.charCodeAt(0);
  let o = 5;
  for (const p of parts) o += p.copy(out, o);
  return out;
}

/** Encodes a command (the MTA's side: tests and tools that play the MTA). */
export function encodeCommand(cmd: MilterCommand): Buffer {
  switch (cmd.kind) {
    case 'optneg':
      return frame(SMFIC.OPTNEG, [u32(cmd.version), u32(cmd.actions), u32(cmd.protocol)]);
    case 'macro':
      return frame(SMFIC.MACRO, [
        Buffer.from(cmd.stage, 'latin1'),
        ...[...cmd.macros].flatMap(([k, v]) => [...cstr(k.length > 1 ? `{${k}}` : k), ...cstr(v)]),
      ]);
    case 'connect': {
      const head = [...cstr(cmd.hostname), Buffer.from(FAMILY_BYTES[cmd.family], 'latin1')];
      if (cmd.family === 'unknown') return frame(SMFIC.CONNECT, head);
      const port = Buffer.alloc(2);
      port.writeUInt16BE(cmd.port, 0);
      return frame(SMFIC.CONNECT, [...head, port, ...cstr(cmd.address)]);
    }
    case 'helo':
      return frame(SMFIC.HELO, cstr(cmd.name));
    case 'mail':
      return frame(SMFIC.MAIL, cmd.args.flatMap(cstr));
    case 'rcpt':
      return frame(SMFIC.RCPT, cmd.args.flatMap(cstr));
    case 'header':
      return frame(SMFIC.HEADER, [...cstr(cmd.name), ...cstr(cmd.value)]);
    case 'body':
      return frame(SMFIC.BODY, [cmd.chunk]);
    case 'eom':
      return frame(SMFIC.BODYEOB, [cmd.chunk]);
    case 'data':
      return frame(SMFIC.DATA);
    case 'eoh':
      return frame(SMFIC.EOH);
    case 'abort':
      return frame(SMFIC.ABORT);
    case 'quit':
      return frame(SMFIC.QUIT);
    case 'quitNc':
      return frame(SMFIC.QUIT_NC);
    case 'unknown':
      return frame(SMFIC.UNKNOWN, cstr(cmd.line));
  }
}

// ---------------------------------------------------------------------------------------------
// Replies (filter -> MTA)

export type MilterReply =
  | {
      readonly kind: 'optneg';
      readonly version: number;
      readonly actions: number;
      readonly protocol: number;
      /** SETSYMLIST: the macros wanted per stage (SMFIM_*), riding at the end of the OPTNEG reply. */
      readonly macros?: ReadonlyArray<readonly [stage: number, names: string]>;
    }
  | { readonly kind: 'accept' }
  | { readonly kind: 'continue' }
  | { readonly kind: 'discard' }
  | { readonly kind: 'reject' }
  | { readonly kind: 'tempfail' }
  | { readonly kind: 'skip' }
  | { readonly kind: 'progress' }
  | { readonly kind: 'shutdown' }
  | { readonly kind: 'connFail' }
  /** "550 5.7.1 text": the SMTP reply the MTA gives (a literal % written as %%). */
  | { readonly kind: 'replycode'; readonly text: string }
  | { readonly kind: 'addHeader'; readonly name: string; readonly value: Bytes }
  | { readonly kind: 'insHeader'; readonly index: number; readonly name: string; readonly value: Bytes }
  /** An empty value deletes the `index`th field of that name (from 1). */
  | { readonly kind: 'chgHeader'; readonly index: number; readonly name: string; readonly value: Bytes }
  | { readonly kind: 'addRcpt'; readonly address: string }
  | { readonly kind: 'addRcptPar'; readonly address: string; readonly args: string }
  | { readonly kind: 'delRcpt'; readonly address: string }
  | { readonly kind: 'chgFrom'; readonly address: string; readonly args?: string }
  | { readonly kind: 'replBody'; readonly chunk: Buffer }
  | { readonly kind: 'quarantine'; readonly reason: string };

const SIMPLE: Readonly<Record<string, string>> = {
  accept: SMFIR.ACCEPT,
  continue: SMFIR.CONTINUE,
  discard: SMFIR.DISCARD,
  reject: SMFIR.REJECT,
  tempfail: SMFIR.TEMPFAIL,
  skip: SMFIR.SKIP,
  progress: SMFIR.PROGRESS,
  shutdown: SMFIR.SHUTDOWN,
  connFail: SMFIR.CONN_FAIL,
};

/** Replies whose encoding never changes, made once (CONTINUE and ACCEPT go out per message). */
const SIMPLE_FRAMES = new Map(Object.entries(SIMPLE).map(([k, c]) => [k, frame(c)]));

export function encodeReply(r: MilterReply): Buffer {
  switch (r.kind) {
    case 'optneg':
      return frame(SMFIR.OPTNEG, [
        u32(r.version),
        u32(r.actions),
        u32(r.protocol),
        ...(r.macros ?? []).flatMap(([stage, names]) => [u32(stage), ...cstr(names)]),
      ]);
    case 'accept':
    case 'continue':
    case 'discard':
    case 'reject':
    case 'tempfail':
    case 'skip':
    case 'progress':
    case 'shutdown':
    case 'connFail':
      return SIMPLE_FRAMES.get(r.kind) as Buffer;
    case 'replycode':
      return frame(SMFIR.REPLYCODE, cstr(r.text));
    case 'addHeader':
      return frame(SMFIR.ADDHEADER, [...cstr(r.name), ...cstr(r.value)]);
    case 'insHeader':
      return frame(SMFIR.INSHEADER, [u32(r.index), ...cstr(r.name), ...cstr(r.value)]);
    case 'chgHeader':
      return frame(SMFIR.CHGHEADER, [u32(r.index), ...cstr(r.name), ...cstr(r.value)]);
    case 'addRcpt':
      return frame(SMFIR.ADDRCPT, cstr(r.address));
    case 'addRcptPar':
      return frame(SMFIR.ADDRCPT_PAR, [...cstr(r.address), ...cstr(r.args)]);
    case 'delRcpt':
      return frame(SMFIR.DELRCPT, cstr(r.address));
    case 'chgFrom':
      return frame(SMFIR.CHGFROM, [...cstr(r.address), ...(r.args !== undefined ? cstr(r.args) : [])]);
    case 'replBody':
      return frame(SMFIR.REPLBODY, [r.chunk]);
    case 'quarantine':
      return frame(SMFIR.QUARANTINE, cstr(r.reason));
  }
}

/** Decodes a reply packet (the MTA's side: tests, and a checker of what we send). */
export function decodeReply(packet: Packet): MilterReply {
  const p = packet.payload;
  const str = (b: Buffer | undefined) => (b ?? Buffer.alloc(0)).toString('utf8');
  switch (packet.command) {
    case SMFIR.OPTNEG: {
      if (p.length < 12) throw new MilterProtocolError('OPTNEG reply: shorter than 12 bytes');
      const macros: Array<[number, string]> = [];
      let o = 12;
      while (o + 4 < p.length) {
        const stage = p.readUInt32BE(o);
        const end = p.indexOf(0, o + 4);
        if (end < 0) throw new MilterProtocolError('OPTNEG reply: a macro list is not NUL-terminated');
        macros.push([stage, p.subarray(o + 4, end).toString('utf8')]);
        o = end + 1;
      }
      return {
        kind: 'optneg',
        version: p.readUInt32BE(0),
        actions: p.readUInt32BE(4),
        protocol: p.readUInt32BE(8),
        ...(macros.length > 0 ? { macros } : {}),
      };
    }
    case SMFIR.REPLYCODE:
      return { kind: 'replycode', text: str(needStrings(p, 'REPLYCODE', 1)[0]) };
    case SMFIR.ADDHEADER: {
      const [name, value] = needStrings(p, 'ADDHEADER', 2);
      return { kind: 'addHeader', name: str(name), value: value as Buffer };
    }
    case SMFIR.INSHEADER:
    case SMFIR.CHGHEADER: {
      if (p.length < 4) throw new MilterProtocolError('header edit: no index');
      const [name, value] = needStrings(p.subarray(4), 'header edit', 2);
      const kind = packet.command === SMFIR.INSHEADER ? 'insHeader' : 'chgHeader';
      return { kind, index: p.readUInt32BE(0), name: str(name), value: value as Buffer };
    }
    case SMFIR.ADDRCPT:
      return { kind: 'addRcpt', address: str(needStrings(p, 'ADDRCPT', 1)[0]) };
    case SMFIR.ADDRCPT_PAR: {
      const [address, args] = needStrings(p, 'ADDRCPT_PAR', 1);
      return { kind: 'addRcptPar', address: str(address), args: str(args) };
    }
    case SMFIR.DELRCPT:
      return { kind: 'delRcpt', address: str(needStrings(p, 'DELRCPT', 1)[0]) };
    case SMFIR.CHGFROM: {
      const [address, args] = needStrings(p, 'CHGFROM', 1);
      return { kind: 'chgFrom', address: str(address), ...(args !== undefined ? { args: str(args) } : {}) };
    }
    case SMFIR.REPLBODY:
      return { kind: 'replBody', chunk: p };
    case SMFIR.QUARANTINE:
      return { kind: 'quarantine', reason: str(needStrings(p, 'QUARANTINE', 1)[0]) };
    default: {
      const kind = Object.entries(SIMPLE).find(([, c]) => c === packet.command)?.[0];
      if (kind === undefined) {
        throw new MilterProtocolError(`unknown reply byte 0x${packet.command.charCodeAt(0).toString(16)}`);
      }
      return { kind } as MilterReply;
    }
  }
}
