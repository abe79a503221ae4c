import net from 'node:net';
import { z } from 'zod';
import { list } from './primitives.js';

/** "10.0.0.0/8", "::1/128", "192.0.2.7": a CIDR block or a single address, IPv4 or IPv6. */
function isNetwork(entry: string): boolean {
  const [addr = '', prefix, extra] = entry.trim().split('/');
  const family = net.isIP(addr);
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 6 ? 128 : 32);
}

/**
 * A list of client networks (relay.allowedClients, relay.trustedPeers, bypass.clientNetworks,
 * milter.allowedClients): each entry an address or a CIDR block, validated at load, so a bad entry
 * fails naming the key (with file and line) instead of being dropped or failing at first use.
 */
export const networks = list(
  z.string().refine(isNetwork, {
    error: (issue) =>
      `not an address or CIDR block: "${String(issue.input)}" (e.g. 192.0.2.7, 10.0.0.0/8, ::1/128)`,
  }),
);

/** A set of client networks (CIDR blocks and single addresses), IPv4 and IPv6; the runtime form of `networks`. */
export class NetworkList {
  private readonly list = new net.BlockList();

  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      if (!isNetwork(raw)) throw new Error(`not an address or CIDR block: "${raw}"`);
      const [addr = '', prefix] = raw.trim().split('/');
      const type = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (prefix === undefined) this.list.addAddress(addr, type);
      else this.list.addSubnet(addr, Number(prefix), type);
    }
  }

  has(address: string): boolean {
    const a = normaliseAddress(address);
    if (net.isIP(a) === 0) return false;
    return this.list.check(a, net.isIPv6(a) ? 'ipv6' : 'ipv4');
  }
}

/** "::ffff:127.0.0.1" (an IPv4 client of a dual-stack socket) becomes "127.0.0.1". */
export function normaliseAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? (m[1] as string) : address;
}
