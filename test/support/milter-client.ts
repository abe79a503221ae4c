/**
 * The MTA side of the milter protocol for tests: a client that speaks to `sandgate milter` the way
 * Postfix 3.7 does (milter-and-icap.md 1.4): OPTNEG with everything offered, macros (some packets
 * without pairs), CONNECT, HELO, MAIL, RCPT, a HEADER packet per field with the value's leading
 * space kept and folded lines joined by a bare LF, EOH, BODY chunks of at most 65535 bytes with
 * CRLF line ends, end-of-message, and ABORT after every message.
 */
import net from 'node:net';
import {
  decodeReply,
  encodeCommand,
  PacketReader,
  type MilterCommand,
  type MilterReply,
} from '../../src/milter/codec.js';

/** What Postfix 3.7 offers: protocol 6, every action, every protocol bit. */
export const POSTFIX_OFFER = { version: 6, actions: 0x1ff, protocol: 0x1fffff } as const;

export interface PostfixMessage {
  readonly sender?: string;
  readonly recipients?: readonly string[];
  readonly mailArgs?: readonly string[];
  /** The message as the client sent it (CRLF line ends). */
  readonly raw: string | Buffer;
  /** Postfix's queue id, sent as macro i at EOH and EOM. */
  readonly queueId?: string;
}

/** Splits a header block the way Postfix hands it to a milter: name, and value after the colon with LF-joined folds. */
export function postfixHeaders(raw: Buffer): { headers: Array<[Buffer, Buffer]>; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  const block = end < 0 ? raw : raw.subarray(0, end + 2);
  const body = end < 0 ? Buffer.alloc(0) : raw.subarray(end + 4);
  const lines = block.toString('latin1').split('\r\n').slice(0, -1);
  const fields: string[] = [];
  for (const line of lines) {
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1] += `\n${line}`;
    else fields.push(line);
  }
  const headers = fields.map((f): [Buffer, Buffer] => {
    const colon = f.indexOf(':');
    return [Buffer.from(f.slice(0, colon), 'latin1'), Buffer.from(f.slice(colon + 1), 'latin1')];
  });
  return { headers, body };
}

export class MilterClient {
  private readonly reader = new PacketReader();
  private readonly replies: MilterReply[] = [];
  private waiters: Array<(r: MilterReply | undefined) => void> = [];
  /** PROGRESS packets seen (they are not returned by reply()). */
  progress = 0;
  closed = false;
  private readonly closedPromise: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      for (const p of this.reader.push(chunk)) {
        const r = decodeReply(p);
        if (r.kind === 'progress') {
          this.progress++;
          continue;
        }
        const w = this.waiters.shift();
        if (w) w(r);
        else this.replies.push(r);
      }
    });
    socket.on('error', () => undefined);
    this.closedPromise = new Promise((resolve) =>
      socket.once('close', () => {
        this.closed = true;
        for (const w of this.waiters.splice(0)) w(undefined);
        resolve();
      }),
    );
  }

  static async connect(where: number | string): Promise<MilterClient> {
    const socket = typeof where === 'number' ? net.connect(where, '127.0.0.1') : net.connect(where);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new MilterClient(socket);
  }

  send(cmd: MilterCommand | Buffer): void {
    this.socket.write(Buffer.isBuffer(cmd) ? cmd : encodeCommand(cmd));
  }

  /** The next reply (PROGRESS skipped); undefined once the connection is closed. */
  reply(): Promise<MilterReply | undefined> {
    const r = this.replies.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Replies up to and including the verdict (the edits before it first). */
  async eomReplies(): Promise<MilterReply[]> {
    const out: MilterReply[] = [];
    for (;;) {
      const r = await this.reply();
      if (r === undefined) throw new Error(`connection closed after ${JSON.stringify(out)}`);
      out.push(r);
      if (
        !['addHeader', 'insHeader', 'chgHeader', 'addRcpt', 'delRcpt', 'chgFrom', 'replBody'].includes(r.kind)
      )
        return out;
    }
  }

  whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  /** OPTNEG; resolves with our negotiated protocol mask. */
  async negotiate(
    offer: { version: number; actions: number; protocol: number } = POSTFIX_OFFER,
  ): Promise<number> {
    this.send({ kind: 'optneg', ...offer });
    const r = await this.reply();
    if (r?.kind !== 'optneg') throw new Error(`OPTNEG answered with ${JSON.stringify(r)}`);
    this.protocol = r.protocol;
    return r.protocol;
  }

  /** The negotiated protocol mask (after negotiate()). */
  protocol = 0;
  /** Replies to DATA events, in order. */
  readonly dataReplies: MilterReply[] = [];

  /** An event that is answered unless negotiated as no-reply (`nrBit`): returns the reply, if any. */
  async event(cmd: MilterCommand, nrBit: number): Promise<MilterReply | undefined> {
    this.send(cmd);
    return (this.protocol & nrBit) !== 0 ? undefined : this.reply();
  }

  /** CONNECT and HELO as Postfix sends them (with Postfix's default connect macros). */
  async hello(address = '127.0.0.1', helo = 'client.test.local'): Promise<void> {
    this.send({
      kind: 'macro',
      stage: 'C',
      macros: new Map([
        ['j', 'mx.test.local'],
        ['daemon_name', 'smtpd'],
        ['v', 'Postfix 3.7.11'],
      ]),
    });
    await this.event(
      {
        kind: 'connect',
        hostname: 'client.test.local',
        family: address.includes(':') ? 'inet6' : 'inet',
        port: 40000,
        address,
      },
      0x1000,
    );
    await this.event({ kind: 'helo', name: helo }, 0x2000);
  }

  /**
   * One message as Postfix sends it; resolves with the MAIL reply when it refused, else with the
   * end-of-message replies. ABORT follows, as Postfix sends it after every message.
   */
  async message(m: PostfixMessage): Promise<MilterReply[]> {
    // A MACRO packet without pairs: Postfix sends one when none of the stage's macros has a value.
    this.send({ kind: 'macro', stage: 'M', macros: new Map() });
    const mail = await this.event(
      { kind: 'mail', args: [`<${m.sender ?? 'a@test.local'}>`, ...(m.mailArgs ?? [])] },
      0x4000,
    );
    if (mail !== undefined && mail.kind !== 'continue') {
      this.send({ kind: 'abort' });
      return [mail];
    }
    for (const r of m.recipients ?? ['b@example.test']) {
      this.send({ kind: 'macro', stage: 'R', macros: new Map([['rcpt_addr', r]]) });
      await this.event({ kind: 'rcpt', args: [`<${r}>`] }, 0x8000);
    }
    // Postfix sends DATA's macros, then DATA unless the filter skipped it (SMFIP_NODATA).
    this.send({ kind: 'macro', stage: 'T', macros: new Map([['i', m.queueId ?? 'NOQUEUE']]) });
    if ((this.protocol & 0x200) === 0) {
      const r = await this.event({ kind: 'data' }, 0x10000);
      if (r !== undefined) this.dataReplies.push(r);
    }
    const raw = Buffer.isBuffer(m.raw) ? m.raw : Buffer.from(m.raw, 'utf8');
    const { headers, body } = postfixHeaders(raw);
    for (const [name, value] of headers) await this.event({ kind: 'header', name, value }, 0x80);
    if (m.queueId !== undefined)
      this.send({ kind: 'macro', stage: 'N', macros: new Map([['i', m.queueId]]) });
    await this.event({ kind: 'eoh' }, 0x40000);
    for (let o = 0; o < body.length; o += 65535) {
      await this.event({ kind: 'body', chunk: body.subarray(o, o + 65535) }, 0x80000);
    }
    if (m.queueId !== undefined)
      this.send({ kind: 'macro', stage: 'E', macros: new Map([['i', m.queueId]]) });
    this.send({ kind: 'eom', chunk: Buffer.alloc(0) });
    const replies = await this.eomReplies();
    this.send({ kind: 'abort' });
    return replies;
  }

  close(): void {
    this.socket.destroy();
  }
}
