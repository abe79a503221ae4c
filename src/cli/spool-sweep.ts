import { join } from 'node:path';
import type { Logger } from '../core/logger.js';
import { sweepSpoolDir } from '../mime/spool-owner.js';

/**
 * At the start of every command that spools (relay, helper, scan, quarantine, admin): removes the
 * spool files under `<stateDir>/spool` whose owning process is gone (kill -9, a crash, a power
 * cut), at any age. Only `spool/`: the relay queue and the quarantine are never touched.
 */
export function sweepSpool(stateDir: string, log: Logger): void {
  const result = sweepSpoolDir(join(stateDir, 'spool'));
  if (result.removed > 0) {
    log.info(
      { event: 'spool.swept', removed: result.removed, bytes: result.removedBytes, kept: result.kept },
      'removed spool files left by processes that are gone',
    );
  }
}
