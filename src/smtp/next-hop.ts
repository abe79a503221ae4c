import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { NextHop } from '../config/delivery.js';
import { fsyncDir, PARTIAL, writeDurably } from '../store/durable-file.js';
import { SandgateError } from '../core/errors.js';
import { toLf } from './crlf.js';
import { SmtpClient, type Reply, type SmtpClientOptions } from './smtp-client.js';

/** MAIL FROM / RCPT TO parameters to pass on, keyed upper case (BODY, SMTPUTF8, SIZE, RET, ENVID, NOTIFY, ORCPT). */
export type Params = Readonly<Record<string, string | true>>;

/** What came of an XCLIENT attempt (see NextHopSession.xclient). */
export type XclientResult =
  | { readonly status: 'sent' | 'unchanged' | 'not-offered' }
  | { readonly status: 'refused'; readonly reply: Reply };

/** One session with the next hop: the relay's client session drives it command by command. */
export interface NextHopSession {
  /** Whether the session can take another command (a dead SMTP connection cannot). */
  readonly usable: boolean;
  /**
   * Whether the session may go back to a pool for another client's transaction. False once it
   * carries one client's XCLIENT identity that the next hop will not let us change again, or
   * after a refused XCLIENT (the next hop's idea of the client is then unknown).
   */
  readonly reusable: boolean;
  /**
   * XCLIENT, outside a transaction: makes the next hop see the client as `attrs` says (only the
   * attributes it lists), reads its new greeting and says EHLO again. 'unchanged': the session
   * already carries exactly this identity. 'not-offered': the next hop has no XCLIENT (or none
   * of these attributes). 'refused': a 4xx/5xx to the (first) XCLIENT; the caller falls back.
   */
  xclient(attrs: ReadonlyMap<string, string>): Promise<XclientResult>;
  /** XFORWARD attributes, sent only when the next hop offers XFORWARD (and only the attributes it lists). */
  xforward(attrs: ReadonlyMap<string, string>): Promise<void>;
  mail(sender: string, params: Params): Promise<Reply>;
  rcpt(recipient: string, params: Params): Promise<Reply>;
  /**
   * MAIL and the transaction's first RCPT in one round trip when the next hop offers PIPELINING
   * (in turn otherwise). `rcpt` is absent when the next hop refused MAIL.
   */
  mailRcpt(
    sender: string,
    params: Params,
    recipient: string,
    rcptParams: Params,
  ): Promise<{ mail: Reply; rcpt?: Reply }>;
  /**
   * Hands the message on; one reply per accepted recipient for LMTP, else one reply. `crlf`: the
   * caller vouches that the bytes are already CRLF-normalised (the relay's spool).
   */
  data(
    message: AsyncIterable<Buffer>,
    recipients: readonly string[],
    msgId: string,
    options?: { readonly crlf?: boolean },
  ): Promise<Reply[]>;
  noop(): Promise<Reply>;
  reset(): Promise<Reply>;
  close(): Promise<void>;
}

export interface NextHopConnector {
  readonly describe: string;
  connect(signal?: AbortSignal): Promise<NextHopSession>;
}

export type SmtpNextHopOptions = Omit<SmtpClientOptions, 'host' | 'port' | 'lmtp' | 'signal'>;

const ok = (text: string): Reply => ({ code: 250, enhanced: '2.0.0', lines: [text] });

/** RFC 3461 xtext: bytes outside "!".."~", and "+" and "=", as "+HH". */
export function xtext(value: string): string {
  let out = '';
  for (const b of Buffer.from(value, 'utf8')) {
    out +=
      b >= 0x21 && b <= 0x7e && b !== 0x2b && b !== 0x3d
        ? String.fromCharCode(b)
        : `+${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** An SMTP command line is at most 512 octets with its CRLF (RFC 5321 4.5.3.1.4). */
const MAX_COMMAND = 510;

/**
 * XCLIENT command lines for `attrs` (name -> plain value, or [UNAVAILABLE] / [TEMPUNAVAIL]),
 * keeping only the attributes the next hop listed (`offered`, upper case) and non-empty values,
 * xtext-encoded, in the order given (NAME and ADDR first). Callers send every attribute they
 * have a name for, unknown ones as [UNAVAILABLE], so nothing of an earlier client stays. Attributes that do not fit one 512-octet command go into further
 * XCLIENT commands, as XCLIENT_README asks.
 */
export function xclientLines(attrs: ReadonlyMap<string, string>, offered: ReadonlySet<string>): string[] {
  const lines: string[] = [];
  let line = '';
  for (const [name, value] of attrs) {
    const key = name.toUpperCase();
    if (!offered.has(key) || value === '') continue;
    // A value too long for any command goes as [UNAVAILABLE]: left out, the next hop would keep
    // the previous client's value on a reused session.
    let part = `${key}=${xtext(value)}`;
    if (part.length + 'XCLIENT '.length > MAX_COMMAND) part = `${key}=[UNAVAILABLE]`;
    if (line !== '' && line.length + 1 + part.length > MAX_COMMAND) {
      lines.push(line);
      line = '';
    }
    line = line === '' ? `XCLIENT ${part}` : `${line} ${part}`;
  }
  if (line !== '') lines.push(line);
  return lines;
}

export function createConnector(hop: NextHop, smtp: SmtpNextHopOptions): NextHopConnector {
  switch (hop.kind) {
    case 'smtp':
    case 'lmtp':
      return {
        describe: `${hop.kind}://${hop.host}:${hop.port}`,
        async connect(signal) {
          const client = await SmtpClient.connect({
            ...smtp,
            host: hop.host,
            port: hop.port,
            lmtp: hop.kind === 'lmtp',
            ...(signal ? { signal } : {}),
          });
          return new SmtpSession(client);
        },
      };
    case 'directory':
      return {
        describe: `directory:${hop.path}`,
        connect() {
          mkdirSync(hop.path, { recursive: true });
          return Promise.resolve(new DirectorySession(hop.path));
        },
      };
    case 'submitted':
      return {
        describe: `submitted:${hop.path}`,
        connect() {
          // CommuniGate's directory: never created here (a wrong path would swallow mail).
          if (!isDirectory(hop.path)) {
            return Promise.reject(
              new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', `${hop.path} is not a directory`, {
                details: { path: hop.path },
              }),
            );
          }
          return Promise.resolve(new SubmittedSession(hop.path));
        },
      };
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

class SmtpSession implements NextHopSession {
  /** XFORWARD lines that go out in one write with the next MAIL (when the next hop pipelines). */
  private xforwardLines: string[] = [];
  /** The XCLIENT attributes listed in the next hop's first EHLO reply; undefined: no XCLIENT. */
  private readonly xclientOffer: ReadonlySet<string> | undefined;
  /** The XCLIENT lines the next hop last accepted: whose identity this session carries. */
  private identity: string | undefined;
  private fixed = false;

  constructor(private readonly client: SmtpClient) {
    const offer = client.extensions.get('XCLIENT');
    this.xclientOffer =
      offer === undefined
        ? undefined
        : new Set(
            offer
              .toUpperCase()
              .split(/\s+/)
              .filter((a) => a !== ''),
          );
  }

  get usable(): boolean {
    return !this.client.closed;
  }

  get reusable(): boolean {
    return !this.fixed;
  }

  async xclient(attrs: ReadonlyMap<string, string>): Promise<XclientResult> {
    if (this.xclientOffer === undefined) return { status: 'not-offered' };
    const lines = xclientLines(attrs, this.xclientOffer);
    if (lines.length === 0) return { status: 'not-offered' };
    const key = lines.join('\n');
    if (key === this.identity) return { status: 'unchanged' };
    if (!this.client.extensions.has('XCLIENT')) {
      // The next hop took one XCLIENT and offers no other (smtp-server after ADDR): the session
      // is another client's. Not reached through the pool, which never gets such a session back.
      throw new SandgateError('ERR_NEXT_HOP_UNAVAILABLE', 'the next hop session cannot take another XCLIENT');
    }
    this.xforwardLines = [];
    this.identity = undefined;
    // The EHLO after XCLIENT names the client as it named itself: Postfix logs and checks the
    // HELO name of that EHLO, not the XCLIENT HELO attribute.
    const helo = attrs.get('HELO');
    const refused = await this.client.xclient(
      lines,
      helo !== undefined &&
        /^[\x21-\x7e]{1,255}$/.test(helo) &&
        !/^\[(UNAVAILABLE|TEMPUNAVAIL)\]$/i.test(helo)
        ? helo
        : undefined,
    );
    if (refused !== undefined) {
      this.fixed = true;
      return { status: 'refused', reply: refused };
    }
    this.identity = key;
    // No XCLIENT in the new EHLO reply: this identity is for good; the session serves no one else.
    if (!this.client.extensions.has('XCLIENT')) this.fixed = true;
    return { status: 'sent' };
  }

  async xforward(attrs: ReadonlyMap<string, string>): Promise<void> {
    const offered = this.client.extensions.get('XFORWARD');
    if (offered === undefined) return;
    const allowed = new Set(offered.toUpperCase().split(/\s+/));
    const parts = [...attrs]
      .filter(([k, v]) => allowed.has(k) && v !== '' && !/[\s\r\n]/.test(v))
      .map(([k, v]) => `${k}=${v}`);
    if (parts.length === 0) return;
    // Postfix limits one XFORWARD line; send the attributes a few at a time.
    const lines: string[] = [];
    for (let i = 0; i < parts.length; i += 3) lines.push(`XFORWARD ${parts.slice(i, i + 3).join(' ')}`);
    // With PIPELINING they ride along with MAIL (as Postfix's own client sends them): one round
    // trip instead of three per message. MAIL's reply is still the one the client gets.
    if (this.client.extensions.has('PIPELINING')) {
      this.xforwardLines = lines;
      return;
    }
    for (const line of lines) {
      const r = await this.client.command(line);
      if (r.code !== 250) return;
    }
  }

  async mail(sender: string, params: Params): Promise<Reply> {
    const replies = await this.pipelined([this.mailLine(sender, params)]);
    return replies[0] as Reply;
  }

  async mailRcpt(
    sender: string,
    params: Params,
    recipient: string,
    rcptParams: Params,
  ): Promise<{ mail: Reply; rcpt?: Reply }> {
    const mail = this.mailLine(sender, params);
    const rcpt = this.rcptLine(recipient, rcptParams);
    if (!this.client.extensions.has('PIPELINING')) {
      const m = await this.client.command(mail);
      return m.code < 300 ? { mail: m, rcpt: await this.client.command(rcpt) } : { mail: m };
    }
    // After a refused MAIL the next hop answers the RCPT with a 503, which means nothing here.
    const [m, r] = (await this.pipelined([mail, rcpt])) as [Reply, Reply];
    return m.code < 300 ? { mail: m, rcpt: r } : { mail: m };
  }

  rcpt(recipient: string, params: Params): Promise<Reply> {
    return this.client.command(this.rcptLine(recipient, params));
  }

  /**
   * Sends `lines` (MAIL first) after any XFORWARD lines waiting to ride along, in one write, and
   * resolves with the replies to `lines`. A refused XFORWARD only loses the attributes, as without
   * pipelining; MAIL decides.
   */
  private async pipelined(lines: readonly string[]): Promise<Reply[]> {
    const xforward = this.xforwardLines;
    this.xforwardLines = [];
    const replies = await this.client.commands([...xforward, ...lines]);
    return replies.slice(xforward.length);
  }

  private mailLine(sender: string, params: Params): string {
    const ext = this.client.extensions;
    const args: string[] = [];
    const body = params.BODY;
    if (typeof body === 'string' && ext.has('8BITMIME') && /^(7BIT|8BITMIME)$/i.test(body))
      args.push(`BODY=${body.toUpperCase()}`);
    if (params.SMTPUTF8 !== undefined && ext.has('SMTPUTF8')) args.push('SMTPUTF8');
    if (typeof params.SIZE === 'string' && ext.has('SIZE') && /^\d+$/.test(params.SIZE))
      args.push(`SIZE=${params.SIZE}`);
    if (ext.has('DSN')) {
      for (const k of ['RET', 'ENVID'] as const) {
        const v = params[k];
        if (typeof v === 'string' && /^[\x21-\x7e]+$/.test(v)) args.push(`${k}=${v}`);
      }
    }
    return `MAIL FROM:<${sender}>${args.length ? ` ${args.join(' ')}` : ''}`;
  }

  private rcptLine(recipient: string, params: Params): string {
    const args: string[] = [];
    if (this.client.extensions.has('DSN')) {
      for (const k of ['NOTIFY', 'ORCPT'] as const) {
        const v = params[k];
        if (typeof v === 'string' && /^[\x21-\x7e]+$/.test(v)) args.push(`${k}=${v}`);
      }
    }
    return `RCPT TO:<${recipient}>${args.length ? ` ${args.join(' ')}` : ''}`;
  }

  data(
    message: AsyncIterable<Buffer>,
    recipients: readonly string[],
    _msgId: string,
    options: { readonly crlf?: boolean } = {},
  ): Promise<Reply[]> {
    return this.client.data(message, recipients.length, options);
  }

  noop(): Promise<Reply> {
    return this.client.command('NOOP');
  }

  reset(): Promise<Reply> {
    this.xforwardLines = [];
    return this.client.command('RSET');
  }

  close(): Promise<void> {
    return this.client.quit();
  }
}

/**
 * A next hop that writes one file per message into a directory: written to a temporary name
 * (`.partial`), fsynced, renamed, and the directory fsynced, so a file that exists under its final
 * name is complete and survives a crash.
 */
abstract class FileDropSession implements NextHopSession {
  readonly usable = true;
  readonly reusable = true;
  protected sender = '';

  constructor(protected readonly dir: string) {}

  /** The file's name, what goes in front of the message, and the message as written. */
  protected abstract file(
    recipients: readonly string[],
    msgId: string,
    message: AsyncIterable<Buffer>,
  ): { name: string; head: Buffer; body: AsyncIterable<Buffer> };

  xforward(): Promise<void> {
    return Promise.resolve();
  }

  xclient(): Promise<XclientResult> {
    return Promise.resolve({ status: 'not-offered' });
  }

  mail(sender: string): Promise<Reply> {
    this.sender = sender;
    return Promise.resolve(ok('Ok'));
  }

  rcpt(recipient: string): Promise<Reply> {
    void recipient;
    return Promise.resolve(ok('Ok'));
  }

  async mailRcpt(sender: string, params: Params, recipient: string): Promise<{ mail: Reply; rcpt?: Reply }> {
    const mail = await this.mail(sender);
    return mail.code < 300 ? { mail, rcpt: await this.rcpt(recipient) } : { mail };
  }

  async data(message: AsyncIterable<Buffer>, recipients: readonly string[], msgId: string): Promise<Reply[]> {
    const { name, head, body } = this.file(recipients, msgId, message);
    const final = join(this.dir, name);
    try {
      await writeDurably(final, (out) => pipeline(withPrefix(head, body), out), { mode: 0o640 });
      await fsyncDir(this.dir);
    } catch (err) {
      rmSync(final + PARTIAL, { force: true });
      throw err;
    }
    return [ok(`Ok: delivered to ${name}`)];
  }

  noop(): Promise<Reply> {
    return Promise.resolve(ok('Ok'));
  }

  reset(): Promise<Reply> {
    this.sender = '';
    return Promise.resolve(ok('Ok'));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The `directory` next hop: one file per delivered message, `<msgId>.eml`, whose first two
 * lines carry the envelope (`Return-Path: <sender>`, `X-Envelope-To: <a>, <b>`), the message's
 * bytes as they are.
 */
class DirectorySession extends FileDropSession {
  protected file(recipients: readonly string[], msgId: string, message: AsyncIterable<Buffer>) {
    const safe = /^[A-Za-z0-9._-]{1,100}$/.test(msgId) ? msgId : randomBytes(6).toString('hex');
    const clean = (s: string) => s.replace(/[\r\n<>]/g, '');
    const head = Buffer.from(
      `Return-Path: <${clean(this.sender)}>\r\n` +
        `X-Envelope-To: ${recipients.map((r) => `<${clean(r)}>`).join(', ')}\r\n`,
    );
    return { name: `${safe}.eml`, head, body: message };
  }
}

/**
 * CommuniGate Pro's PIPE module `Submitted` directory: an RFC 822 file in native (LF) line
 * endings, no dot-stuffing, the envelope in `Return-Path:` and `Envelope-To:` fields (which
 * CommuniGate removes), named `.sub` only once complete (CommuniGate picks up `*.sub` files only).
 * Addresses that cannot be written into those fields are refused at MAIL and RCPT.
 */
class SubmittedSession extends FileDropSession {
  override mail(sender: string): Promise<Reply> {
    if (sender !== '' && !isPlainAddress(sender)) {
      return Promise.resolve(refuse(553, '5.1.7', 'the sender address cannot be written as Return-Path'));
    }
    return super.mail(sender);
  }

  override rcpt(recipient: string): Promise<Reply> {
    if (!isPlainAddress(recipient)) {
      return Promise.resolve(refuse(553, '5.1.3', 'the recipient address cannot be written as Envelope-To'));
    }
    return super.rcpt(recipient);
  }

  protected file(recipients: readonly string[], _msgId: string, message: AsyncIterable<Buffer>) {
    const fields = [`Return-Path: <${this.sender}>`, ...recipients.map((r) => `Envelope-To: ${r}`)];
    return {
      name: `sandgate-${Date.now()}-${randomBytes(6).toString('hex')}.sub`,
      head: Buffer.from(fields.map((f) => `${f}\n`).join(''), 'utf8'),
      body: toLf(message),
    };
  }
}

const refuse = (code: number, enhanced: string, text: string): Reply => ({ code, enhanced, lines: [text] });

/** An address we may write into a header field: no line breaks, no angle brackets, one @. */
function isPlainAddress(a: string): boolean {
  return /^[^\s<>@,;"]+@[^\s<>@,;"]+$/.test(a);
}

async function* withPrefix(prefix: Buffer, rest: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  yield prefix;
  yield* rest;
}
