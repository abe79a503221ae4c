import { NetworkList } from '../config/networks.js';
import type { Config } from '../config/schema.js';
import type { BypassMatcher } from '../core/ports.js';

/** Builds the matcher for config.bypass; undefined when every list is empty. */
export function createBypassMatcher(bypass: Config['bypass']): BypassMatcher | undefined {
  const { clientNetworks, senders, recipientDomains } = bypass;
  if (clientNetworks.length === 0 && senders.length === 0 && recipientDomains.length === 0) return undefined;
  const networks = new NetworkList(clientNetworks);
  const senderSet = new Set(senders.map((s) => s.toLowerCase()));
  const domains = new Set(recipientDomains.map((d) => d.toLowerCase().replace(/^@/, '')));
  return (envelope) => {
    if (envelope.clientAddress !== undefined && networks.has(envelope.clientAddress)) return 'client';
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
