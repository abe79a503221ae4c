import type { Config } from '../config/schema.js';
import { MARK_KEY_FINGERPRINT, secretFingerprint } from '../core/cluster.js';
import { SandgateError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { ClusterStore } from '../core/ports.js';

/**
 * Every process and node on one state must sign and check X-Sandgate-Mark with the same key: the
 * state keeps the key's fingerprint (the first process to start records it), and a process whose
 * key has another fingerprint refuses to start with ERR_MARK_KEY_MISMATCH, naming the key file.
 */
export async function checkMarkKey(
  cluster: Pick<ClusterStore, 'claimFingerprint'>,
  markKey: Buffer,
  deps: { readonly config: Config; readonly keyPath: string; readonly log: Logger; readonly now?: number },
): Promise<void> {
  const ours = secretFingerprint(markKey, MARK_KEY_FINGERPRINT);
  const stored = await cluster.claimFingerprint(MARK_KEY_FINGERPRINT, ours, deps.now ?? Date.now());
  if (stored === ours) return;
  const key =
    deps.config.headers.markKeyFile !== undefined ? 'headers.markKeyFile' : 'headers.markKeyFile (unset)';
  deps.log.error(
    { event: 'cluster.mark_key_mismatch', path: deps.keyPath, fingerprint: ours, stored },
    'the X-Sandgate-Mark key differs from the one the other processes on this state use',
  );
  throw new SandgateError(
    'ERR_MARK_KEY_MISMATCH',
    `${key}: the X-Sandgate-Mark key in ${deps.keyPath} (fingerprint ${ours}) is not the one the state was started with (fingerprint ${stored}); every process and node sharing the state must use the same key file (docs/cluster.md)`,
    { details: { key: 'headers.markKeyFile', path: deps.keyPath, fingerprint: ours, stored } },
  );
}
