import { createHash } from 'node:crypto';

/**
 * Fingerprint of a secret every process on a shared state must have the same of (the
 * X-Sandgate-Mark key, the PT Sandbox token): 16 hex digits of SHA-256 over the purpose and the
 * secret. Enough to tell two secrets apart, useless for finding the secret; never the secret
 * itself. The purpose keeps the fingerprints of one value used for two things apart.
 */
export function secretFingerprint(secret: string | Buffer, purpose: string): string {
  return createHash('sha256').update(`sandgate/${purpose}\0`).update(secret).digest('hex').slice(0, 16);
}

/** The names under which ClusterStore keeps the fingerprints. */
export const MARK_KEY_FINGERPRINT = 'mark-key';
export const PT_TOKEN_FINGERPRINT = 'pt-sandbox-token';
