import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

let owner: string | undefined;

/**
 * This process in the shared state (PT task and job leases, in-flight rows): host, pid and a random
 * part, so that a later process that gets the same pid is not taken for this one.
 */
export function processOwner(): string {
  return (owner ??= `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`);
}
