import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

const EICAR_MARK = 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE';

/** What the fake does with one INSTREAM. */
export type FakeInstreamBehavior =
  /** Like clamd with an EICAR signature: FOUND when the payload holds the EICAR string, else OK. */
  | { readonly kind: 'scan'; readonly signature?: string }
  | { readonly kind: 'ok' }
  | { readonly kind: 'found'; readonly signature: string }
  | { readonly kind: 'error'; readonly text: string }
  /** Reads everything, never answers. */
  | { readonly kind: 'hang' }
  /** Sends a TCP RST once this many payload bytes have arrived. */
  | { readonly kind: 'reset'; readonly afterBytes: number }
  /** Answers these raw bytes (give your own terminator, or none) and closes. */
  | { readonly kind: 'raw'; readonly reply: Buffer | string; readonly keepOpen?: boolean }
  /** Answers OK as soon as the command arrives, before the stream ends. */
  | { readonly kind: 'early-ok' };

export interface FakeClamdOptions {
  /** Listen on this unix socket path instead of 127.0.0.1:0. */
  readonly unixPath?: string;
  readonly version?: string;
  readonly behavior?: FakeInstreamBehavior;
  /** Like clamd's StreamMaxLength: past it, "INSTREAM size limit exceeded. ERROR" and close. */
  readonly streamMaxLength?: number;
  /** PING and VERSION get no answer. */
  readonly hangCommands?: boolean;
}

/**
 * A protocol-speaking clamd over a real socket: zPING/nPING, zVERSION/nVERSION and
 * zINSTREAM/nINSTREAM with real chunk framing. Behaviour and VERSION can change between calls.
 */
export class FakeClamd {
  version: string;
  behavior: FakeInstreamBehavior;
  streamMaxLength: number;
  hangCommands: boolean;
  /** Counters per command; `payloads` holds every complete INSTREAM body received. */
  readonly counts = { connections: 0, PING: 0, VERSION: 0, INSTREAM: 0, other: 0 };
  readonly payloads: Buffer[] = [];
  private readonly open = new Set<Socket>();
  private closedWaiters: Array<() => void> = [];

  private constructor(
    private readonly server: Server,
    readonly address: string,
    options: FakeClamdOptions,
  ) {
    this.version = options.version ?? 'ClamAV 1.4.6/27000/Fri Nov 27 00:00:00 2026';
    this.behavior = options.behavior ?? { kind: 'scan' };
    this.streamMaxLength = options.streamMaxLength ?? 25 * 1024 * 1024;
    this.hangCommands = options.hangCommands ?? false;
  }

  static async start(options: FakeClamdOptions = {}): Promise<FakeClamd> {
    const server = createServer();
    if (options.unixPath !== undefined) server.listen(options.unixPath);
    else server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = options.unixPath ?? `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const fake = new FakeClamd(server, address, options);
    server.on('connection', (socket) => fake.handle(socket));
    return fake;
  }

  /** Connections currently open (the client must close every one it made). */
  get openConnections(): number {
    return this.open.size;
  }

  /** Resolves once no connection is open. */
  async allClosed(): Promise<void> {
    if (this.open.size === 0) return;
    await new Promise<void>((resolve) => this.closedWaiters.push(resolve));
  }

  async close(): Promise<void> {
    for (const s of this.open) s.destroy();
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(socket: Socket): void {
    this.counts.connections++;
    this.open.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.open.delete(socket);
      if (this.open.size === 0) {
        const waiters = this.closedWaiters;
        this.closedWaiters = [];
        for (const w of waiters) w();
      }
    });
    let buf = Buffer.alloc(0);
    let state: 'command' | 'instream' | 'done' = 'command';
    let term = '\0';
    let chunks: Buffer[] = [];
    let payloadBytes = 0;
    let behavior = this.behavior;

    const reply = (text: string, close = true): void => {
      state = 'done';
      socket.write(text + term);
      if (close) socket.end();
    };

    socket.on('data', (data: Buffer) => {
      if (state === 'done') return;
      buf = Buffer.concat([buf, data]);
      if (state === 'command') {
        const end = buf.findIndex((b) => b === 0 || b === 0x0a);
        if (end < 0) return;
        const raw = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 1);
        let command = raw;
        if (raw.startsWith('z')) {
          term = '\0';
          command = raw.slice(1);
        } else if (raw.startsWith('n')) {
          term = '\n';
          command = raw.slice(1);
        } else {
          term = '\n';
        }
        behavior = this.behavior;
        if (command === 'PING' || command === 'VERSION') {
          this.counts[command]++;
          if (this.hangCommands) {
            state = 'done';
            return;
          }
          return reply(command === 'PING' ? 'PONG' : this.version);
        }
        if (command !== 'INSTREAM') {
          this.counts.other++;
          return reply('UNKNOWN COMMAND');
        }
        this.counts.INSTREAM++;
        state = 'instream';
        if (behavior.kind === 'early-ok') return reply('stream: OK');
      }
      // INSTREAM chunks: 4-byte big-endian length, then that many bytes; 0 ends the stream.
      while (state === 'instream' && buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len === 0) {
          buf = buf.subarray(4);
          const payload = Buffer.concat(chunks);
          this.payloads.push(payload);
          chunks = [];
          this.answer(behavior, payload, reply, socket);
          return;
        }
        if (payloadBytes + len > this.streamMaxLength) return reply('INSTREAM size limit exceeded. ERROR');
        if (buf.length < 4 + len) {
          // Count partial chunk bytes for the reset trigger.
          if (behavior.kind === 'reset' && payloadBytes + buf.length - 4 >= behavior.afterBytes) {
            state = 'done';
            socket.resetAndDestroy();
          }
          return;
        }
        chunks.push(Buffer.from(buf.subarray(4, 4 + len)));
        payloadBytes += len;
        buf = buf.subarray(4 + len);
        if (behavior.kind === 'reset' && payloadBytes >= behavior.afterBytes) {
          state = 'done';
          socket.resetAndDestroy();
          return;
        }
      }
    });
  }

  private answer(
    behavior: FakeInstreamBehavior,
    payload: Buffer,
    reply: (text: string, close?: boolean) => void,
    socket: Socket,
  ): void {
    switch (behavior.kind) {
      case 'scan':
        return reply(
          payload.includes(EICAR_MARK)
            ? `stream: ${behavior.signature ?? 'Eicar-Test-Signature'} FOUND`
            : 'stream: OK',
        );
      case 'ok':
      case 'early-ok':
        return reply('stream: OK');
      case 'found':
        return reply(`stream: ${behavior.signature} FOUND`);
      case 'error':
        return reply(behavior.text);
      case 'hang':
        return;
      case 'reset':
        // Fewer bytes than afterBytes arrived: behave like a crash at the end of the stream.
        socket.resetAndDestroy();
        return;
      case 'raw':
        socket.write(behavior.reply);
        if (!behavior.keepOpen) socket.end();
        return;
    }
  }
}
