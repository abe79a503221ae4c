import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';

export interface SinkMessage {
  readonly sender: string;
  readonly recipients: string[];
  readonly bytes: Buffer;
  readonly mailArgs: Record<string, string | true>;
  readonly xforward: Record<string, string>;
  /** XCLIENT attributes the session carried (smtp-server's session.xClient; [UNAVAILABLE] for none). */
  readonly xclient: Record<string, string>;
  /** The client as the session saw it: after XCLIENT, the forwarded one. */
  readonly client: { readonly address: string; readonly hostname: string; readonly port: number };
  readonly secure: boolean;
  readonly user?: string;
}

export interface SinkBehaviour {
  /** Recipients refused at RCPT with this reply (address lower case -> [code, text]). */
  refuseRecipients: Map<string, [number, string]>;
  /** Refuse MAIL FROM with this reply. */
  refuseMail?: [number, string] | undefined;
  /** Reply to the final dot with this (4xx/5xx) instead of 250. */
  refuseData?: [number, string] | undefined;
  /** LMTP only: per-recipient reply after the dot (address lower case -> [code, text]). */
  lmtpRefuse: Map<string, [number, string]>;
  /** Answer XCLIENT with this refusal (as an access decision of the next hop would) while offering it. */
  refuseXclient?: [number, string] | undefined;
}

export interface SmtpSink {
  readonly port: number;
  readonly messages: SinkMessage[];
  readonly behaviour: SinkBehaviour;
  /** Number of RCPT commands seen, in order. */
  readonly rcptLog: string[];
  /** Sessions opened so far. */
  connections: number;
  /** XCLIENT commands received, in order (the raw command lines). */
  readonly xclientLog: string[];
  /** Socket errors of sessions (a peer that reset its connection). */
  readonly errors: Error[];
  /** Resolves when `n` messages have arrived. */
  waitFor(n: number): Promise<SinkMessage[]>;
  close(): Promise<void>;
}

interface ConnectionInternals {
  _proxyCommandAllowed(command: string, option: string): boolean;
  _xClient: Map<string, unknown>;
  handler_XCLIENT(command: Buffer, callback: () => void): void;
  send(code: number, text: string): void;
}

/**
 * smtp-server with two test knobs on its XCLIENT: the command is logged; `behaviour.refuseXclient`
 * answers it with a refusal; with `xclientRepeat` XCLIENT stays available after an ADDR, as in
 * Postfix and Exim (authorized by the real peer address), where smtp-server allows one per
 * connection.
 */
class SinkServer extends SMTPServer {
  constructor(
    options: SMTPServerOptions,
    private readonly sink: { xclientLog: string[]; behaviour: SinkBehaviour },
    private readonly xclientRepeat: boolean,
  ) {
    super(options);
  }

  override connect(
    socket: Parameters<SMTPServer['connect']>[0],
    socketOptions?: Parameters<SMTPServer['connect']>[1],
  ): void {
    super.connect(socket, socketOptions);
    let last: unknown;
    for (const c of this.connections) last = c; // the newest connection is the last one
    if (last === undefined) return;
    const conn = last as ConnectionInternals;
    const handle = conn.handler_XCLIENT.bind(conn);
    conn.handler_XCLIENT = (command, callback) => {
      this.sink.xclientLog.push(command.toString().trim());
      const r = this.sink.behaviour.refuseXclient;
      if (r) {
        conn.send(r[0], r[1]);
        return callback();
      }
      handle(command, callback);
    };
    if (!this.xclientRepeat) return;
    const allowed = conn._proxyCommandAllowed.bind(conn);
    conn._proxyCommandAllowed = (command, option) => {
      if (!conn._xClient.has('ADDR')) return allowed(command, option);
      const addr = conn._xClient.get('ADDR');
      conn._xClient.delete('ADDR');
      try {
        return allowed(command, option);
      } finally {
        conn._xClient.set('ADDR', addr);
      }
    };
  }
}

/**
 * A real SMTP (or LMTP) server on 127.0.0.1:0 that keeps every message it accepts (envelope and
 * exact bytes), refuses chosen recipients at RCPT, and can answer the final dot with 4xx/5xx.
 */
export async function startSmtpSink(
  opts: Partial<SMTPServerOptions> & { lmtp?: boolean; xclientRepeat?: boolean } = {},
): Promise<SmtpSink> {
  const { xclientRepeat = false, ...options } = opts;
  const messages: SinkMessage[] = [];
  const rcptLog: string[] = [];
  const waiters: Array<{ n: number; resolve: (m: SinkMessage[]) => void }> = [];
  const behaviour: SinkBehaviour = { refuseRecipients: new Map(), lmtpRefuse: new Map() };
  const fail = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });
  const sink: SmtpSink = {
    port: 0,
    messages,
    behaviour,
    rcptLog,
    connections: 0,
    xclientLog: [],
    errors: [],
    waitFor(n) {
      if (messages.length >= n) return Promise.resolve(messages.slice());
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    close: () => Promise.resolve(),
  };
  const server = new SinkServer(
    {
      name: 'sink.test.local',
      logger: false,
      disableReverseLookup: true,
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      useXForward: true,
      hideDSN: false,
      size: 100 * 1024 * 1024,
      closeTimeout: 200,
      ...options,
      onConnect(_session, cb) {
        sink.connections++;
        cb();
      },
      onMailFrom(_address, _session, cb) {
        const r = behaviour.refuseMail;
        cb(r ? fail(r[0], r[1]) : null);
      },
      onRcptTo(address, _session, cb) {
        rcptLog.push(address.address);
        const r = behaviour.refuseRecipients.get(address.address.toLowerCase());
        cb(r ? fail(r[0], r[1]) : null);
      },
      onData(stream, session, cb) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const r = behaviour.refuseData;
          if (r) return cb(fail(r[0], r[1]));
          const xforward: Record<string, string> = {};
          for (const [k, v] of session.xForward) if (typeof v === 'string') xforward[k] = v;
          const xclient: Record<string, string> = {};
          for (const [k, v] of session.xClient as Map<string, unknown>) {
            if (k.includes(':')) continue; // ADDR:DEFAULT and the like: the values before XCLIENT
            xclient[k] = v === false ? '[UNAVAILABLE]' : String(v);
          }
          const rcpts = session.envelope.rcptTo.map((x) => x.address);
          messages.push({
            sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            recipients: rcpts,
            bytes: Buffer.concat(chunks),
            mailArgs:
              session.envelope.mailFrom && session.envelope.mailFrom.args
                ? session.envelope.mailFrom.args
                : {},
            xforward,
            xclient,
            client: {
              address: session.remoteAddress,
              hostname: session.clientHostname,
              port: session.remotePort,
            },
            secure: session.secure,
            ...(typeof session.user === 'string' ? { user: session.user } : {}),
          });
          for (const w of waiters.splice(0)) {
            if (messages.length >= w.n) w.resolve(messages.slice());
            else waiters.push(w);
          }
          if (options.lmtp) {
            return cb(
              null,
              rcpts.map((a) => {
                const x = behaviour.lmtpRefuse.get(a.toLowerCase());
                return x ? fail(x[0], x[1]) : `2.0.0 delivered to ${a}`;
              }),
            );
          }
          cb(null, `2.0.0 Ok: queued as SINK${messages.length}`);
        });
      },
    },
    sink,
    xclientRepeat,
  );
  // A peer that dies mid-session (a relay killed by a test) resets its socket; a real MTA logs it and
  // carries on, so does the sink: the error is kept for tests to look at, not thrown.
  server.on('error', (err) => sink.errors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (sink as { port: number }).port = (server.server.address() as AddressInfo).port;
  sink.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return sink;
}
