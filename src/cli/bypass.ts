import { BlockList, isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import { SandgateError } from '../core/errors.js';
import type { BypassMatcher } from '../core/ports.js';

/** Builds the matcher for config.bypass; undefined when every list is empty. */
export function createBypassMatcher(bypass: Config['bypass']): BypassMatcher | undefined {
  const { clientNetworks, senders, recipientDomains } = bypass;
  if (clientNetworks.length === 0 && senders.length === 0 && recipientDomains.length === 0) return undefined;
  const networks = buildBlockList(clientNetworks, 'bypass.clientNetworks');
  const senderSet = new Set(senders.map((s) => s.toLowerCase()));
  const domains = new Set(recipientDomains.map((d) => d.toLowerCase().replace(/^@/, '')));
  return (envelope) => {
    const ip = envelope.clientAddress?.replace(/^::ffff:/, '');
    if (ip && isIP(ip) && networks.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4')) return 'client';
    if (envelope.sender !== '' && senderSet.has(envelope.sender.toLowerCase())) return 'sender';
    // Only when every recipient is in a bypass domain: one protected recipient means the message is scanned.
    if (
      domains.size > 0 &&
      envelope.recipients.length > 0 &&
      envelope.recipients.every((r) => domains.has(r.slice(r.lastIndexOf('@') + 1).toLowerCase()))
    ) {
      return 'recipient';
    }
    return undefined;
  };
}

/** A BlockList from "10.0.0.0/8", "::1/128" or bare addresses; a bad entry names the key. */
export function buildBlockList(entries: readonly string[], key: string): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [addr = '', prefix] = entry.split('/');
    const family = isIP(addr);
    const bits = prefix === undefined ? (family === 6 ? 128 : 32) : Number(prefix);
    if (family === 0 || !Number.isInteger(bits) || bits < 0 || bits > (family === 6 ? 128 : 32)) {
      throw new SandgateError('ERR_CONFIG_INVALID', `${key}: "${entry}" is not an address or CIDR block`, {
        details: { key, entry },
      });
    }
    list.addSubnet(addr, bits, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}
