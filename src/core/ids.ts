import { randomBytes } from 'node:crypto';

/**
 * Our message id: sortable by time, safe in file names and header values, unique across processes.
 * Example: `sg-mbx1k2p3-5f2a9c0d1e`.
 */
export function newMsgId(now: number = Date.now()): string {
  return `sg-${now.toString(36)}-${randomBytes(5).toString('hex')}`;
}

const MSG_ID = /^sg-[0-9a-z]{6,12}-[0-9a-f]{10}$/;
export function isMsgId(value: string): boolean {
  return MSG_ID.test(value);
}
