/** What the quarantine store tests put in and read back. */
import type { Decision } from '../../src/core/policy.js';

/** A suspicious message kept in quarantine: the decision the store tests file items under. */
export const SUSPICIOUS_DECISION: Decision = {
  action: 'quarantine',
  keepCopy: true,
  verdict: 'suspicious',
  reason: 'suspicious',
  threats: ['X'],
  failOpen: false,
};

/** Every chunk of a stream (a quarantined message read back), as one buffer. */
export async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}
