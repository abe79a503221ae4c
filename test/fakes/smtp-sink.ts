import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';

export interface SinkMessage {
  readonly sender: string;
  readonly recipients: string[];
  readonly bytes: Buffer;
  readonly mailArgs: Record<string, string | true>;
  readonly xforward: Record<string, string>;
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
}

export interface SmtpSink {
  readonly port: number;
  readonly messages: SinkMessage[];
  readonly behaviour: SinkBehaviour;
  /** Number of RCPT commands seen, in order. */
  readonly rcptLog: string[];
  /** Sessions opened so far. */
  connections: number;
  /** Socket errors of sessions (a peer that reset its connection). */
  readonly errors: Error[];
  /** Resolves when `n` messages have arrived. */
  waitFor(n: number): Promise<SinkMessage[]>;
  close(): Promise<void>;
}

/**
 * A real SMTP (or LMTP) server on 127.0.0.1:0 that keeps every message it accepts (envelope and
 * exact bytes), refuses chosen recipients at RCPT, and can answer the final dot with 4xx/5xx.
 */
export async function startSmtpSink(
  options: Partial<SMTPServerOptions> & { lmtp?: boolean } = {},
): Promise<SmtpSink> {
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
    errors: [],
    waitFor(n) {
      if (messages.length >= n) return Promise.resolve(messages.slice());
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    close: () => Promise.resolve(),
  };
  const server = new SMTPServer({
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
        const rcpts = session.envelope.rcptTo.map((x) => x.address);
        messages.push({
          sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          recipients: rcpts,
          bytes: Buffer.concat(chunks),
          mailArgs:
            session.envelope.mailFrom && session.envelope.mailFrom.args ? session.envelope.mailFrom.args : {},
          xforward,
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
  });
  // A peer that dies mid-session (a relay killed by a test) resets its socket; a real MTA logs it and
  // carries on, so does the sink: the error is kept for tests to look at, not thrown.
  server.on('error', (err) => sink.errors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (sink as { port: number }).port = (server.server.address() as AddressInfo).port;
  sink.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return sink;
}
