import { once } from 'node:events';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import tls from 'node:tls';
import { SandgateError } from '../core/errors.js';
import { LineNormaliser } from '../core/line-endings.js';
import { toDataWire } from './crlf.js';

/** One SMTP/LMTP reply: the code, the enhanced status code when present, and the text lines. */
export interface Reply {
  readonly code: number;
  readonly enhanced?: string;
  /** The text of every line, without code and enhanced status. */
  readonly lines: readonly string[];
}

export function replyText(r: Reply): string {
  return r.lines.join(' ');
}

export function formatReply(r: Reply): string {
  return `${r.code} ${r.enhanced ? `${r.enhanced} ` : ''}${replyText(r)}`;
}

export interface SmtpClientOptions {
  readonly host: string;
  readonly port: number;
  readonly lmtp: boolean;
  /** Our EHLO/LHLO name. */
  readonly name: string;
  /** Connect, greeting and per-reply timeout (ms). */
  readonly timeout: number;
  readonly tls: 'none' | 'opportunistic' | 'required';
  readonly ca?: string | Buffer;
  readonly servername?: string;
  readonly auth?: { readonly user: string; readonly pass: string };
  readonly signal?: AbortSignal;
}

const MAX_LINE = 8192;
/** Bytes per BDAT chunk: a message up to this size goes out as a single BDAT LAST. */
const BDAT_CHUNK = 1024 * 1024;
const MAX_REPLY_LINES = 200;

/**
 * A small SMTP/LMTP client that sends one command at a time and returns each reply, so the relay
 * can answer its own client with the next hop's reply to the very same command (lockstep).
 * nodemailer's SMTPConnection sends MAIL, every RCPT and DATA as one unit and reports refused
 * recipients only afterwards, which is too late to refuse them to our client.
 *
 * Connection failures reject with ERR_NEXT_HOP_UNAVAILABLE; replies we cannot parse with
 * ERR_NEXT_HOP_PROTOCOL. A negative reply is not an error: callers look at `code`.
 */
export class SmtpClient {
  /** EHLO keywords (upper case) and their parameters. */
  readonly extensions = new Map<string, string>();
  secure = false;
  private socket: net.Socket | tls.TLSSocket;
  private buffer = '';
  /** Keeps a UTF-8 character split across two reads whole (a reply text may hold one). */
  private readonly decoder = new StringDecoder('utf8');
  private pending: Reply[] = [];
  private partial: string[] = [];
  private waiters: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> =
    [];
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => this.feed(chunk);

  private constructor(
    socket: net.Socket,
    private readonly options: SmtpClientOptions,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  /** Connects, reads the greeting, says EHLO/LHLO, upgrades with STARTTLS and authenticates as configured. */
  static async connect(options: SmtpClientOptions): Promise<SmtpClient> {
    const socket = net.connect({ host: options.host, port: options.port });
    socket.setNoDelay(true);
    const client = new SmtpClient(socket, options);
    const onAbort = () => client.fail(new SandgateError('ERR_ABORTED', 'next hop connection aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const greeting = await client.read();
      if (greeting.code !== 220) throw client.refused('greeting', greeting);
      await client.hello();
      if (options.tls !== 'none' && !options.lmtp && client.extensions.has('STARTTLS')) {
        await client.startTls();
      } else if (options.tls === 'required') {
        throw new SandgateError(
          'ERR_NEXT_HOP_UNAVAILABLE',
          'the next hop does not offer STARTTLS, which is required',
          {
            details: { host: options.host, port: options.port },
          },
        );
      }
      if (options.auth) await client.authenticate(options.auth);
      return client;
    } catch (err) {
      client.close();
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  get closed(): boolean {
    return this.failure !== undefined || this.socket.destroyed;
  }

  /** Sends one command line and resolves with its reply (positive or negative). */
  async command(line: string): Promise<Reply> {
    if (/[\r\n]/.test(line))
      throw new SandgateError('ERR_NEXT_HOP_PROTOCOL', 'refusing to send a command with a line break');
    this.write(`${line}\r\n`);
    return this.read();
  }

  /**
   * Sends several command lines in one write and resolves with their replies, in order. Only for
   * a next hop that offers PIPELINING (RFC 2920), and never with DATA or a command that changes
   * the connection (STARTTLS, AUTH) inside the group.
   */
  async commands(lines: readonly string[]): Promise<Reply[]> {
    if (lines.some((line) => /[\r\n]/.test(line)))
      throw new SandgateError('ERR_NEXT_HOP_PROTOCOL', 'refusing to send a command with a line break');
    this.write(lines.map((line) => `${line}\r\n`).join(''));
    return Promise.all(lines.map(() => this.read()));
  }

  /**
   * Sends DATA and, after 354, the message (normalised to CRLF and dot-stuffed) and the final dot.
   * Resolves with the 354 refusal, or with the replies after the dot: one for SMTP, `replies` for LMTP.
   * `crlf`: the caller vouches that the message is already CRLF-normalised (see toDataWire).
   * Writes are corked and go out together up to the socket's buffer size, so the added header
   * fields and a small message leave in one send.
   */
  async data(
    message: AsyncIterable<Buffer> | Readable,
    replies: number,
    options: { readonly crlf?: boolean } = {},
  ): Promise<Reply[]> {
    if (!this.options.lmtp && this.extensions.has('CHUNKING')) {
      return [await this.bdat(message as AsyncIterable<Buffer>, options)];
    }
    const go = await this.command('DATA');
    if (go.code !== 354) return [go];
    const socket = this.socket;
    socket.cork();
    try {
      for await (const chunk of toDataWire(message as AsyncIterable<Buffer>, options)) {
        if (this.failure) throw this.failure;
        if (socket.write(chunk)) continue;
        // Over the high-water mark: send what is corked, and wait only if the kernel did not take it all.
        socket.uncork();
        if (socket.writableLength > 0) await this.drain();
        socket.cork();
      }
    } finally {
      socket.uncork();
    }
    const out: Reply[] = [];
    for (let i = 0; i < (this.options.lmtp ? replies : 1); i++) out.push(await this.read());
    return out;
  }

  /**
   * The message with BDAT (RFC 3030 CHUNKING) instead of DATA: no 354 round trip, no dot-stuffing.
   * A message up to BDAT_CHUNK bytes goes out as one "BDAT <n> LAST" in one send; a larger one in
   * chunks of that size, each acknowledged before the next is sent (a refused chunk ends the
   * transaction, and nothing more may follow it). Resolves with the first refusal or the reply to
   * the LAST chunk, which is the message's reply. Line endings are normalised to CRLF (unless the
   * caller vouches they are), as on the DATA path.
   */
  private async bdat(message: AsyncIterable<Buffer>, options: { readonly crlf?: boolean }): Promise<Reply> {
    const lines = options.crlf === true ? undefined : new LineNormaliser(false);
    let batch: Buffer[] = [];
    let size = 0;
    const send = async (last: boolean): Promise<Reply> => {
      if (this.failure) throw this.failure;
      const socket = this.socket;
      socket.cork();
      socket.write(`BDAT ${size}${last ? ' LAST' : ''}\r\n`);
      for (const b of batch) socket.write(b);
      socket.uncork();
      batch = [];
      size = 0;
      if (socket.writableLength > 0) await this.drain();
      return this.read();
    };
    const add = async (chunk: Buffer): Promise<Reply | undefined> => {
      if (chunk.length === 0) return undefined;
      batch.push(chunk);
      size += chunk.length;
      if (size < BDAT_CHUNK) return undefined;
      const r = await send(false);
      return r.code < 300 ? undefined : r;
    };
    for await (const chunk of message) {
      const refused = await add(lines ? lines.push(chunk) : chunk);
      if (refused) return refused;
    }
    if (lines) {
      const refused = await add(lines.end());
      if (refused) return refused;
    }
    return send(true);
  }

  /**
   * XCLIENT (Postfix XCLIENT_README): sends each line and expects the new greeting (220) to each,
   * then says EHLO/LHLO again (with `helo`, the client's own name, when given: Postfix takes
   * the HELO name from that EHLO), which refreshes `extensions`. Resolves with the refusal of the
   * first line (the identity is unchanged; the session carries on as before), or undefined on
   * success. A refusal of a later line leaves the identity half changed: the connection is closed
   * and the call rejects with ERR_NEXT_HOP_UNAVAILABLE, as does a 421.
   */
  async xclient(lines: readonly string[], helo?: string): Promise<Reply | undefined> {
    for (const [i, line] of lines.entries()) {
      const r = await this.command(line);
      if (r.code === 220) continue;
      if (i === 0 && r.code !== 421) return r;
      this.close();
      throw this.refused('XCLIENT', r);
    }
    await this.hello(helo);
    return undefined;
  }

  /** QUIT politely (bounded by the timeout), then close. */
  async quit(): Promise<void> {
    if (this.closed) return;
    try {
      await this.command('QUIT');
    } catch {
      // the peer may close first
    }
    this.close();
  }

  close(): void {
    this.fail(new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', 'next hop connection closed'));
    this.socket.destroy();
  }

  private async hello(name = this.options.name): Promise<void> {
    const verb = this.options.lmtp ? 'LHLO' : 'EHLO';
    let r = await this.command(`${verb} ${name}`);
    if (r.code !== 250 && !this.options.lmtp) r = await this.command(`HELO ${name}`);
    if (r.code !== 250) throw this.refused(verb, r);
    this.extensions.clear();
    for (const line of r.lines.slice(1)) {
      const [kw = '', ...rest] = line.trim().split(/\s+/);
      this.extensions.set(kw.toUpperCase(), rest.join(' '));
    }
  }

  private async startTls(): Promise<void> {
    const r = await this.command('STARTTLS');
    if (r.code !== 220) {
      if (this.options.tls === 'required') throw this.refused('STARTTLS', r);
      return;
    }
    const raw = this.socket;
    this.detach(raw);
    const verify = this.options.tls === 'required' || this.options.ca !== undefined;
    const servername =
      this.options.servername ?? (net.isIP(this.options.host) ? undefined : this.options.host);
    const secure = tls.connect({
      socket: raw,
      rejectUnauthorized: verify,
      ...(this.options.ca !== undefined ? { ca: this.options.ca } : {}),
      ...(servername !== undefined ? { servername } : {}),
    });
    this.socket = secure;
    this.attach(secure);
    await this.withTimeout(once(secure, 'secureConnect'), 'TLS handshake');
    this.secure = true;
    await this.hello();
  }

  private async authenticate(auth: { user: string; pass: string }): Promise<void> {
    const mechs = (this.extensions.get('AUTH') ?? '').toUpperCase().split(/\s+/);
    let r: Reply;
    if (mechs.includes('PLAIN')) {
      r = await this.command(`AUTH PLAIN ${Buffer.from(`\0${auth.user}\0${auth.pass}`).toString('base64')}`);
    } else if (mechs.includes('LOGIN')) {
      r = await this.command('AUTH LOGIN');
      if (r.code === 334) r = await this.command(Buffer.from(auth.user).toString('base64'));
      if (r.code === 334) r = await this.command(Buffer.from(auth.pass).toString('base64'));
    } else {
      throw new SandgateError(
        'ERR_NEXT_HOP_UNAVAILABLE',
        'the next hop offers no AUTH mechanism we support (PLAIN, LOGIN)',
      );
    }
    if (r.code !== 235) throw this.refused('AUTH', r);
  }

  private refused(step: string, r: Reply): SandgateError {
    return new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', `the next hop refused ${step}`, {
      details: { step, code: r.code, reply: formatReply(r).slice(0, 200) },
    });
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('error', (err) =>
      this.fail(new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', 'next hop connection failed', { cause: err })),
    );
    socket.on('close', () =>
      this.fail(new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', 'the next hop closed the connection')),
    );
  }

  private detach(socket: net.Socket): void {
    socket.off('data', this.onData);
    socket.removeAllListeners('error');
    socket.removeAllListeners('close');
  }

  private write(s: string): void {
    if (this.failure) throw this.failure;
    this.socket.write(s);
  }

  private async drain(): Promise<void> {
    await this.withTimeout(once(this.socket, 'drain'), 'write');
  }

  private async withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', `next hop timed out (${what})`);
        this.fail(err);
        reject(err);
      }, this.options.timeout);
    });
    try {
      return await Promise.race([p, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  private read(): Promise<Reply> {
    const ready = this.pending.shift();
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', 'next hop did not reply in time');
        this.fail(err);
        this.socket.destroy();
      }, this.options.timeout);
      this.waiters.push({ resolve, reject, timer });
    });
  }

  private feed(chunk: Buffer): void {
    this.buffer += this.decoder.write(chunk);
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      this.line(line);
    }
    if (this.buffer.length > MAX_LINE) this.protocolError('reply line too long');
  }

  private line(line: string): void {
    const m = /^(\d{3})([ -]|$)(.*)$/.exec(line);
    if (!m) return this.protocolError('reply without a code');
    this.partial.push(line);
    if (this.partial.length > MAX_REPLY_LINES) return this.protocolError('reply too long');
    if (m[2] === '-') return;
    const code = Number(m[1]);
    const lines = this.partial.map((l) => l.slice(4));
    this.partial = [];
    const enh = /^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)/.exec(lines[0] ?? '');
    const reply: Reply = enh
      ? {
          code,
          enhanced: enh[1],
          lines: lines.map((l) => l.replace(/^[245]\.\d{1,3}\.\d{1,3}\s?/, '')),
        }
      : { code, lines };
    const w = this.waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(reply);
    } else if (code === 421) {
      // RFC 5321 4.2: the server is closing an idle session; nothing may be sent after it.
      this.fail(new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', 'the next hop closed the session (421)'));
    } else {
      this.pending.push(reply);
    }
  }

  private protocolError(what: string): void {
    this.fail(new SandgateError('ERR_NEXT_HOP_PROTOCOL', `next hop sent a malformed reply: ${what}`));
    this.socket.destroy();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(this.failure);
    }
  }
}
