import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer } from 'smtp-server';
import type { NetworkList } from '../config/networks.js';

/**
 * smtp-server with what the relay needs of its trusted peers (relay.trustedPeers, addresses or
 * CIDR blocks):
 * - XFORWARD and XCLIENT are believed only from them. smtp-server matches its peer list by exact
 *   address; its check is wrapped per connection to ask our network list instead.
 * - smtp-server waits a fixed 100 ms before each greeting to catch clients that talk too early
 *   (spam bots). The MTA that feeds a content filter is trusted and pays that on every new
 *   connection (at concurrency 10 that caps the relay at ~94 messages/s). For trusted peers we
 *   greet at once: connectionReady() is made idempotent and called right away, and the library's
 *   own timer later finds it already done. Everyone else keeps the delay.
 */
export class RelaySmtpServer extends SMTPServer {
  constructor(
    options: ConstructorParameters<typeof SMTPServer>[0],
    private readonly trustedPeers: NetworkList,
    private readonly maxClients: number,
  ) {
    super(options);
  }

  override connect(
    socket: net.Socket | tls.TLSSocket,
    socketOptions?: Parameters<SMTPServer['connect']>[1],
  ): void {
    super.connect(socket, socketOptions);
    if (this.connections.size > this.maxClients) return;
    let conn: (typeof this.connections extends Set<infer C> ? C : never) | undefined;
    for (const c of this.connections) conn = c; // a Set keeps insertion order: the last one is the new one
    if (conn === undefined) return;
    coalesceReplies(conn);
    const trusted = this.trustedPeers.has(socket.remoteAddress ?? '');
    trustProxyCommands(conn, trusted);
    if (!trusted) return;
    const ready = conn.connectionReady.bind(conn);
    let started = false;
    conn.connectionReady = (next?: () => void) => {
      if (started) return;
      started = true;
      ready(next);
    };
    conn.connectionReady();
  }
}

/** The part of smtp-server's connection that writes replies (one socket write per reply). */
interface ReplySender {
  send(code: number, ...rest: unknown[]): void;
  _socket?: net.Socket;
}

/**
 * Replies written in the same tick leave in one send: a pipelining client (Postfix sends XFORWARD,
 * MAIL, RCPT and DATA at once) otherwise gets one TCP segment, and one wake-up, per reply. The
 * socket is corked at the first reply of a tick and uncorked on the next tick. Not for 220 (the
 * STARTTLS go-ahead must be out before the handshake) nor 221/421 (the connection ends).
 */
function coalesceReplies(conn: ReplySender): void {
  const send = conn.send.bind(conn);
  conn.send = (code: number, ...rest: unknown[]) => {
    const socket = conn._socket;
    if (code !== 220 && code !== 221 && code !== 421 && socket !== undefined && socket.writableCorked === 0) {
      socket.cork();
      process.nextTick(() => socket.uncork());
    }
    send(code, ...rest);
  };
}

/** The part of smtp-server's connection that decides whether XFORWARD / XCLIENT may be used. */
interface ProxyCheck {
  _proxyCommandAllowed(command: string, option: string): boolean;
}

/**
 * XFORWARD and XCLIENT for a trusted peer only: smtp-server is configured to offer them to every
 * peer (its own list matches exact addresses, not CIDR blocks), and this connection's check adds
 * whether the peer is in relay.trustedPeers.
 */
function trustProxyCommands(conn: ProxyCheck, trusted: boolean): void {
  const allowed = conn._proxyCommandAllowed.bind(conn);
  conn._proxyCommandAllowed = (command, option) => trusted && allowed(command, option);
}
