import net from 'node:net';

/** A set of client networks (CIDR blocks and single addresses), IPv4 and IPv6. */
export class NetworkList {
  private readonly list = new net.BlockList();

  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      const [addr = '', prefix] = raw.trim().split('/');
      const type = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (net.isIP(addr) === 0) throw new Error(`not an address or CIDR block: "${raw}"`);
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
