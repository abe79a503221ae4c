import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import { SandgateError } from '../core/errors.js';

/** Where the quarantine API's token comes from, and whether this start created it. */
export interface AdminTokenFile {
  readonly path: string;
  readonly created: boolean;
}

/**
 * The admin token file: admin.tokenFile, or with admin.createTokenFile (the first-run config)
 * <stateDir>/admin.token when tokenFile is unset. With createTokenFile a missing file is created
 * with a random token, mode 0600 (written whole under a private name, then linked into place, so
 * two processes starting together end up with the same token). Undefined: no token, no
 * quarantine API.
 */
export function adminTokenFile(config: Config): AdminTokenFile | undefined {
  const path =
    config.admin.tokenFile ??
    (config.admin.createTokenFile ? join(config.stateDir, 'admin.token') : undefined);
  if (path === undefined) return undefined;
  if (!config.admin.createTokenFile) return { path, created: false };
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    writeFileSync(tmp, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
    linkSync(tmp, path);
    return { path, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { path, created: false };
    throw new SandgateError('ERR_SECRET_FILE', `admin.createTokenFile: cannot create ${path}`, {
      cause: err,
      details: { path },
    });
  } finally {
    rmSync(tmp, { force: true });
  }
}
