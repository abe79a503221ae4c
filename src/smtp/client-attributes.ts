import net from 'node:net';
import type { SMTPServerSession } from 'smtp-server';
import type { RelayConfig } from '../config/relay.js';
import type { ClientAttributes } from './forwarder.js';
import { normaliseAddress } from '../config/networks.js';

/** The relay.nextHopOptions switches that choose which attributes the next hop gets. */
type AttributeOptions = Pick<RelayConfig['nextHopOptions'], 'xforward' | 'xclient'>;

/** Who the client is, for the next hop: XFORWARD attributes, and XCLIENT ones when configured. */
export function clientAttributesOf(session: SMTPServerSession, options: AttributeOptions): ClientAttributes {
  const xforward = xforwardOf(session, options);
  if (!options.xclient) return { xforward };
  return { xforward, xclient: xclientOf(session) };
}

/** XFORWARD attributes for the next hop: what a trusted peer told us, else what we saw. */
export function xforwardOf(
  session: SMTPServerSession,
  options: Pick<AttributeOptions, 'xforward'>,
): ReadonlyMap<string, string> {
  if (!options.xforward) return new Map();
  const xf = session.xForward;
  const addr = normaliseAddress(session.remoteAddress);
  const attrs = new Map<string, string>([
    // smtp-server writes "[address]" when it has no name (reverse lookups are off): for the next
    // hop that is no host name but [UNAVAILABLE] (Postfix refuses the whole XFORWARD otherwise).
    ['NAME', hostnameOf(session.clientHostname) ?? '[UNAVAILABLE]'],
    ['ADDR', addr.includes(':') ? `IPV6:${addr}` : addr],
    ['PORT', String(session.remotePort)],
    ['PROTO', session.openingCommand === 'HELO' ? 'SMTP' : 'ESMTP'],
    // XCLIENT's HELO outlives the EHLO the peer sends after it (XCLIENT_README).
    ['HELO', stringOr(session.xClient.get('HELO'), session.hostNameAppearsAs || '[UNAVAILABLE]')],
  ]);
  for (const k of ['PROTO', 'IDENT', 'SOURCE'] as const) {
    const v = xf.get(k);
    if (typeof v === 'string' && v !== '') attrs.set(k, v);
  }
  return attrs;
}

const stringOr = (v: unknown, fallback: string): string => (typeof v === 'string' && v !== '' ? v : fallback);

const UNAVAILABLE = '[UNAVAILABLE]';
const HOSTNAME =
  /^(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/**
 * XCLIENT attributes (Postfix XCLIENT_README): the client as a trusted peer described it with
 * XCLIENT or XFORWARD (smtp-server applied those to the session), else as it connected to us.
 * Every attribute gets a value, [UNAVAILABLE] when unknown, so that a next-hop session reused for
 * another client keeps nothing of the previous one (a LOGIN above all). sandgate does no DNS
 * lookups: a client name nobody told us is [TEMPUNAVAIL] ("unknown" for now, not "has none").
 */
function xclientOf(session: SMTPServerSession): ReadonlyMap<string, string> {
  const xc = session.xClient;
  const xf = session.xForward;
  const given = (k: string): string | false | undefined => {
    const v = xc.has(k) ? xc.get(k) : xf.get(k);
    return typeof v === 'string' ? v : v === false ? false : undefined;
  };
  const fromPeer = xc.has('ADDR') || xf.has('ADDR');
  const ip = (a: string) => {
    const n = normaliseAddress(a);
    return n.includes(':') ? `IPV6:${n}` : n;
  };
  const name = session.clientHostname;
  const proto = given('PROTO') || (session.openingCommand === 'HELO' ? 'SMTP' : 'ESMTP');
  const helo = given('HELO') ?? session.hostNameAppearsAs;
  const login = xc.get('LOGIN');
  return new Map([
    ['NAME', given('NAME') === false ? UNAVAILABLE : (hostnameOf(name) ?? '[TEMPUNAVAIL]')],
    ['ADDR', given('ADDR') === false || !session.remoteAddress ? UNAVAILABLE : ip(session.remoteAddress)],
    ['PORT', session.remotePort > 0 ? String(session.remotePort) : UNAVAILABLE],
    ['PROTO', /^SMTP$/i.test(proto) ? 'SMTP' : 'ESMTP'],
    ['HELO', helo && helo.length <= 255 ? helo : UNAVAILABLE],
    ['LOGIN', typeof login === 'string' && login !== '' ? login : UNAVAILABLE],
    ['DESTADDR', fromPeer || !session.localAddress ? UNAVAILABLE : ip(session.localAddress)],
    ['DESTPORT', fromPeer || !(session.localPort > 0) ? UNAVAILABLE : String(session.localPort)],
  ]);
}

/** The client's host name when it has a real one (not smtp-server's "[address]" stand-in). */
function hostnameOf(name: string | undefined): string | undefined {
  return name && HOSTNAME.test(name) && net.isIP(name) === 0 ? name : undefined;
}
