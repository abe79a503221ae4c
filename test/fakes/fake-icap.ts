import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';

const EICAR_MARK = 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE';

/** How the fake reports an infection (the vendor variants of docs/icap.md). */
export type InfectionForm =
  | 'x-infection-found'
  | 'x-virus-id'
  | 'x-violations-found'
  | 'x-blocked'
  | 'x-blocked-reason'
  | 'x-response-info'
  /** A 200 with an encapsulated 403 block page and no infection header. */
  | 'block-page'
  /** A 200 with other content (HTTP 200) and no header. */
  | 'replaced'
  /** Any other header, given as "Name: value". */
  | { readonly header: string };

/** What the fake does with one RESPMOD or REQMOD. */
export type FakeIcapBehavior =
  /** Like an antivirus service: the EICAR string anywhere means infected (in `form`), else 204 (an echo without Allow: 204). */
  | {
      readonly kind: 'scan';
      readonly form?: InfectionForm;
      readonly threat?: string;
      /** Like c-icap's MaxObjectSize: bodies this big or bigger get 204 unscanned. */
      readonly maxObjectSize?: number;
    }
  /** 200 with the body echoed (all of it). */
  | { readonly kind: 'echo' }
  /** 200 with the first `bytes` of the body, properly ended, no header (c-icap's SendPercentData). */
  | { readonly kind: 'partial'; readonly bytes: number }
  /** 200 echo, but the connection closes after `bytes` of the body. */
  | { readonly kind: 'cut'; readonly bytes: number }
  /** Answers with an ICAP status and no body. */
  | { readonly kind: 'status'; readonly status: number; readonly reason?: string; readonly close?: boolean }
  /** These raw bytes as the answer; then closes unless keepOpen. */
  | { readonly kind: 'raw'; readonly reply: string | Buffer; readonly keepOpen?: boolean }
  /** Reads the preview and never answers. */
  | { readonly kind: 'hang-after-preview' }
  /** Reads everything and never answers. */
  | { readonly kind: 'hang' }
  /** Reads the request head and closes without a word. */
  | { readonly kind: 'close' }
  /** Answers 204 as soon as the head arrives, before any body (no preview). */
  | { readonly kind: '204-early' }
  /** Answers 100 Continue even after "0; ieof", then scans. */
  | { readonly kind: 'continue-after-ieof' }
  /** Answers the preview with 204 (it decided from the preview). */
  | { readonly kind: 'preview-204' };

export interface FakeIcapOptions {
  readonly behavior?: FakeIcapBehavior;
  readonly methods?: string;
  readonly istag?: string;
  /** Preview in OPTIONS; null: no Preview header. Default 1024. */
  readonly preview?: number | null;
  readonly maxConnections?: number;
  /** Options-TTL in seconds; undefined: none. */
  readonly ttl?: number;
  /** OPTIONS without an ISTag (responses still carry one). */
  readonly omitOptionsIstag?: boolean;
  /** OPTIONS answers this status instead of 200. */
  readonly optionsStatus?: number;
  /** Extra lines for the OPTIONS answer ("Transfer-Complete: exe"). */
  readonly optionsHeaders?: readonly string[];
  /** The service path; other paths get 404. Default /avscan. */
  readonly service?: string;
  /** Add "Connection: close" to answers and close after each. */
  readonly closeAfterEach?: boolean;
  /** Serve ICAP over TLS (icaps://) with this key and certificate (PEM). */
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer };
}

export interface ReceivedRequest {
  readonly method: string;
  readonly uri: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The encapsulated header sections as received. */
  readonly encapsulatedHeaders: string;
  readonly body: Buffer;
  readonly preview?: number;
  readonly ieof: boolean;
  /** The exact bytes received for this request. */
  readonly raw: Buffer;
}

/**
 * A protocol-speaking ICAP server over a real socket (RFC 3507): OPTIONS, RESPMOD and REQMOD with
 * Encapsulated sections, chunked bodies, Preview with 100 Continue and ieof, keep-alive. Its
 * behaviour, ISTag and limits can change between requests.
 */
export class FakeIcap {
  behavior: FakeIcapBehavior;
  istag: string;
  preview: number | null;
  maxConnections: number | undefined;
  ttl: number | undefined;
  optionsStatus: number;
  /** The next RESPMOD/REQMOD on a connection that already served one is met by closing it (a server gone idle-close). */
  closeNextReused = false;
  readonly counts = { connections: 0, OPTIONS: 0, RESPMOD: 0, REQMOD: 0, continues: 0, maxConcurrent: 0 };
  readonly requests: ReceivedRequest[] = [];
  private readonly open = new Set<Socket>();
  private closedWaiters: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly o: FakeIcapOptions,
  ) {
    this.behavior = o.behavior ?? { kind: 'scan' };
    this.istag = o.istag ?? 'FAKE-1';
    this.preview = o.preview === undefined ? 1024 : o.preview;
    this.maxConnections = o.maxConnections;
    this.ttl = o.ttl;
    this.optionsStatus = o.optionsStatus ?? 200;
  }

  static async start(o: FakeIcapOptions = {}): Promise<FakeIcap> {
    const server: Server =
      o.tls !== undefined ? createTlsServer({ key: o.tls.key, cert: o.tls.cert }) : createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const fake = new FakeIcap(server, (server.address() as AddressInfo).port, o);
    server.on(
      o.tls !== undefined ? 'secureConnection' : 'connection',
      (socket: Socket) => void fake.handle(socket),
    );
    return fake;
  }

  /** icap://127.0.0.1:<port><service> (icaps:// over TLS) */
  get url(): string {
    return `${this.o.tls !== undefined ? 'icaps' : 'icap'}://127.0.0.1:${this.port}${this.o.service ?? '/avscan'}`;
  }

  get openConnections(): number {
    return this.open.size;
  }

  async allClosed(): Promise<void> {
    if (this.open.size === 0) return;
    await new Promise<void>((resolve) => this.closedWaiters.push(resolve));
  }

  /** Closes every connection (the client sees resets or EOF on its kept-alive sockets). */
  dropConnections(): void {
    for (const s of this.open) s.destroy();
  }

  async close(): Promise<void> {
    this.dropConnections();
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(socket: Socket): Promise<void> {
    let served = 0;
    this.counts.connections++;
    this.open.add(socket);
    this.counts.maxConcurrent = Math.max(this.counts.maxConcurrent, this.open.size);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.open.delete(socket);
      if (this.open.size === 0) {
        const waiters = this.closedWaiters;
        this.closedWaiters = [];
        for (const w of waiters) w();
      }
    });
    const input = new ByteInput(socket);
    try {
      while (!socket.destroyed) {
        const keep = await this.one(socket, input, served++ > 0);
        if (!keep) break;
      }
    } catch {
      // the client went away
    }
  }

  /** Serves one request; false when the connection is done. */
  private async one(socket: Socket, input: ByteInput, reused: boolean): Promise<boolean> {
    input.startRecording();
    const headText = (await input.readUntil('\r\n\r\n')).toString('latin1');
    const [requestLine = '', ...lines] = headText.split('\r\n');
    const [method = '', uri = ''] = requestLine.split(' ');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const service = this.o.service ?? '/avscan';
    const path = uri.replace(/^icap:\/\/[^/]+/, '');
    const behavior = this.behavior;
    if (method === 'OPTIONS') {
      this.counts.OPTIONS++;
      this.requests.push({
        method,
        uri,
        headers,
        encapsulatedHeaders: '',
        body: Buffer.alloc(0),
        ieof: false,
        raw: input.recorded(),
      });
      if (path !== service)
        return this.reply(socket, 'ICAP/1.0 404 ICAP Service not found\r\nEncapsulated: null-body=0\r\n\r\n');
      if (this.optionsStatus !== 200) {
        return this.reply(
          socket,
          `ICAP/1.0 ${this.optionsStatus} Error\r\nEncapsulated: null-body=0\r\n\r\n`,
        );
      }
      const opt = [
        'ICAP/1.0 200 OK',
        `Methods: ${this.o.methods ?? 'RESPMOD, REQMOD'}`,
        'Service: fake-icap',
        ...(this.o.omitOptionsIstag === true ? [] : [`ISTag: "${this.istag}"`]),
        ...(this.preview !== null ? [`Preview: ${this.preview}`] : []),
        ...(this.maxConnections !== undefined ? [`Max-Connections: ${this.maxConnections}`] : []),
        ...(this.ttl !== undefined ? [`Options-TTL: ${this.ttl}`] : []),
        'Transfer-Preview: *',
        'Allow: 204',
        ...(this.o.optionsHeaders ?? []),
        'Encapsulated: null-body=0',
      ];
      return this.reply(socket, `${opt.join('\r\n')}\r\n\r\n`);
    }
    if (method !== 'RESPMOD' && method !== 'REQMOD') {
      return this.reply(socket, 'ICAP/1.0 400 Bad request\r\n\r\n', true);
    }
    if (reused && this.closeNextReused) {
      this.closeNextReused = false;
      socket.destroy();
      return false;
    }
    this.counts[method]++;
    const enc = (headers.encapsulated ?? '').split(',').map((p) => {
      const [name = '', off = '0'] = p.trim().split('=');
      return { name, offset: Number(off) };
    });
    const bodyEntity = enc.at(-1);
    const hdrLen = bodyEntity?.offset ?? 0;
    const encapsulatedHeaders = (await input.readBytes(hdrLen)).toString('latin1');
    if (behavior.kind === 'close') {
      socket.destroy();
      return false;
    }
    if (behavior.kind === '204-early') {
      this.reply(socket, `ICAP/1.0 204 No Content\r\nISTag: "${this.istag}"\r\n\r\n`);
      socket.end();
      return false;
    }
    const preview = headers.preview !== undefined ? Number(headers.preview) : undefined;
    let body: Buffer = Buffer.alloc(0);
    let ieof = false;
    if (bodyEntity !== undefined && bodyEntity.name.endsWith('-body') && bodyEntity.name !== 'null-body') {
      const first = await readChunks(input);
      body = first.data;
      ieof = first.ieof;
      if (preview !== undefined && !ieof) {
        if (behavior.kind === 'hang-after-preview') return new Promise<boolean>(() => undefined);
        if (behavior.kind === 'preview-204') {
          this.record(method, uri, headers, encapsulatedHeaders, body, preview, ieof, input);
          return this.reply(socket, `ICAP/1.0 204 No Content\r\nISTag: "${this.istag}"\r\n\r\n`);
        }
        this.counts.continues++;
        socket.write('ICAP/1.0 100 Continue\r\n\r\n');
        const rest = await readChunks(input);
        body = Buffer.concat([body, rest.data]);
      } else if (ieof && behavior.kind === 'continue-after-ieof') {
        this.counts.continues++;
        socket.write('ICAP/1.0 100 Continue\r\n\r\n');
      }
    }
    this.record(method, uri, headers, encapsulatedHeaders, body, preview, ieof, input);
    const allow204 = /\b204\b/.test(headers.allow ?? '') || (preview !== undefined && ieof);
    return this.answer(socket, behavior, method, encapsulatedHeaders, body, allow204);
  }

  private record(
    method: string,
    uri: string,
    headers: Record<string, string>,
    encapsulatedHeaders: string,
    body: Buffer,
    preview: number | undefined,
    ieof: boolean,
    input: ByteInput,
  ): void {
    this.requests.push({
      method,
      uri,
      headers,
      encapsulatedHeaders,
      body,
      ...(preview !== undefined ? { preview } : {}),
      ieof,
      raw: input.recorded(),
    });
  }

  private answer(
    socket: Socket,
    behavior: FakeIcapBehavior,
    method: string,
    encapsulatedHeaders: string,
    body: Buffer,
    allow204: boolean,
  ): boolean | Promise<boolean> {
    const tag = `ISTag: "${this.istag}"`;
    const echo = (extra: string[] = [], data = body, close = false): boolean => {
      const section =
        method === 'RESPMOD'
          ? `HTTP/1.1 200 OK\r\nVia: fake-icap\r\nContent-Length: ${data.length}\r\n\r\n`
          : encapsulatedHeaders;
      const names = method === 'RESPMOD' ? ['res-hdr', 'res-body'] : ['req-hdr', 'req-body'];
      const head = [
        'ICAP/1.0 200 OK',
        tag,
        ...(this.o.closeAfterEach === true ? ['Connection: close'] : []),
        ...extra,
        `Encapsulated: ${names[0]}=0, ${names[1]}=${section.length}`,
      ];
      socket.write(`${head.join('\r\n')}\r\n\r\n${section}`);
      for (let i = 0; i < data.length; i += 65536) {
        const piece = data.subarray(i, i + 65536);
        socket.write(`${piece.length.toString(16)}\r\n`);
        socket.write(piece);
        socket.write('\r\n');
      }
      if (close) {
        socket.destroy();
        return false;
      }
      return this.reply(socket, '0\r\n\r\n');
    };
    switch (behavior.kind) {
      case 'scan':
      case 'continue-after-ieof':
      case 'hang-after-preview':
      case 'preview-204': {
        const skipped = behavior.kind === 'scan' && body.length >= (behavior.maxObjectSize ?? Infinity);
        if (skipped || !body.includes(EICAR_MARK)) {
          return allow204 ? this.reply(socket, `ICAP/1.0 204 No Content\r\n${tag}\r\n\r\n`) : echo();
        }
        const threat =
          behavior.kind === 'scan' ? (behavior.threat ?? 'Eicar-Test-Signature') : 'Eicar-Test-Signature';
        const form = behavior.kind === 'scan' ? (behavior.form ?? 'x-infection-found') : 'x-infection-found';
        return this.infected(socket, form, threat, method);
      }
      case 'echo':
        return echo();
      case 'partial':
        return echo([], body.subarray(0, behavior.bytes));
      case 'cut':
        return echo([], body.subarray(0, behavior.bytes), true);
      case 'status':
        return this.reply(
          socket,
          `ICAP/1.0 ${behavior.status} ${behavior.reason ?? 'Error'}\r\n${tag}\r\n${behavior.close === true ? 'Connection: close\r\n' : ''}\r\n`,
          behavior.close === true,
        );
      case 'raw':
        socket.write(behavior.reply);
        if (behavior.keepOpen !== true) socket.end();
        return behavior.keepOpen === true;
      case 'hang':
        return new Promise<boolean>(() => undefined);
      case 'close':
      case '204-early':
        socket.destroy();
        return false;
    }
  }

  private infected(socket: Socket, form: InfectionForm, threat: string, method: string): boolean {
    const tag = `ISTag: "${this.istag}"`;
    const page = `<html><body><h1>VIRUS FOUND</h1>${threat}</body></html>\n`;
    const pageChunks = `${page.length.toString(16)}\r\n${page}\r\n0\r\n\r\n`;
    const http = (status: number) =>
      `HTTP/1.1 ${status} ${status === 200 ? 'OK' : 'Forbidden'}\r\nContent-Type: text/html\r\nContent-Length: ${page.length}\r\n\r\n`;
    const withPage = (headers: string[], status: number): boolean => {
      const h = http(status);
      return this.reply(
        socket,
        `${['ICAP/1.0 200 OK', tag, ...headers, `Encapsulated: res-hdr=0, res-body=${h.length}`].join('\r\n')}\r\n\r\n${h}${pageChunks}`,
      );
    };
    void method;
    if (typeof form === 'object') return withPage([form.header], 403);
    switch (form) {
      case 'x-infection-found':
        return withPage([`X-Infection-Found: Type=0; Resolution=2; Threat=${threat};`], 403);
      case 'x-virus-id':
        return withPage([`X-Virus-ID: ${threat}`], 403);
      case 'x-violations-found':
        return withPage([`X-Violations-Found: 1\r\n\tmessage.eml\r\n\t${threat}\r\n\t1001\r\n\t2`], 403);
      case 'x-blocked':
        return withPage(['X-Blocked: yes'], 403);
      case 'x-blocked-reason':
        return withPage([`X-Blocked-Reason: ${threat}`], 403);
      case 'x-response-info':
        return withPage(['X-Response-Info: Blocked', `X-Response-Desc: ${threat}`], 403);
      case 'block-page':
        return withPage([], 403);
      case 'replaced':
        return withPage([], 200);
    }
  }

  private reply(socket: Socket, text: string, close = false): boolean {
    const closeAll = close || this.o.closeAfterEach === true;
    const addClose = closeAll && text.startsWith('ICAP/') && !text.includes('Connection: close');
    socket.write(addClose ? text.replace('\r\n', '\r\nConnection: close\r\n') : text);
    if (closeAll) {
      socket.end();
      return false;
    }
    return true;
  }
}

/** Reads chunks up to a zero chunk: the data, and whether the zero chunk said ieof. */
async function readChunks(input: ByteInput): Promise<{ data: Buffer; ieof: boolean }> {
  const parts: Buffer[] = [];
  for (;;) {
    const line = (await input.readUntil('\r\n')).toString('latin1');
    const size = parseInt(line.split(';')[0] ?? '', 16);
    if (Number.isNaN(size)) throw new Error(`fake-icap: bad chunk line ${JSON.stringify(line)}`);
    if (size === 0) {
      await input.readUntil('\r\n');
      return { data: Buffer.concat(parts), ieof: /;\s*ieof/.test(line) };
    }
    parts.push(await input.readBytes(size));
    const crlf = await input.readBytes(2);
    if (crlf.toString('latin1') !== '\r\n') throw new Error('fake-icap: chunk without CRLF');
  }
}

/** Buffered reads from a socket: up to a delimiter, or a number of bytes. */
class ByteInput {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private ended = false;
  private recording: Buffer[] | undefined;

  constructor(socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.ended = true;
      this.waiter?.();
    });
  }

  startRecording(): void {
    this.recording = [];
  }

  recorded(): Buffer {
    return Buffer.concat(this.recording ?? []);
  }

  async readUntil(delim: string): Promise<Buffer> {
    for (;;) {
      const i = this.buf.indexOf(delim);
      if (i >= 0) return this.take(i + delim.length).subarray(0, i);
      await this.more();
    }
  }

  async readBytes(n: number): Promise<Buffer> {
    while (this.buf.length < n) await this.more();
    return this.take(n);
  }

  private take(n: number): Buffer {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.recording?.push(out);
    return out;
  }

  private more(): Promise<void> {
    if (this.ended) return Promise.reject(new Error('fake-icap: connection closed'));
    return new Promise((resolve) => {
      this.waiter = () => {
        this.waiter = undefined;
        resolve();
      };
    });
  }
}
