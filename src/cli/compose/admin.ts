import type { Registry } from 'prom-client';
import { registerQuarantineRoutes } from '../../admin/quarantine-routes.js';
import { AdminServer, type ReadyCheck } from '../../admin/server.js';
import type { Config } from '../../config/schema.js';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { QuarantineService } from '../../quarantine/service.js';
import { readSecretFile } from '../config-files.js';

/** The shortest admin token accepted: a bearer token guessable in reasonable time is no token. */
const MIN_TOKEN_LENGTH = 16;

/** The admin token from admin.tokenFile; ERR_SECRET_FILE when it cannot be read or is too short. */
export function readAdminToken(path: string): string {
  const token = readSecretFile(path, 'admin.tokenFile');
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new SandgateError(
      'ERR_SECRET_FILE',
      `admin.tokenFile: the token in ${path} is shorter than ${MIN_TOKEN_LENGTH} characters`,
      { details: { path, key: 'admin.tokenFile' } },
    );
  }
  return token;
}

export interface AdminBuild {
  readonly config: Config;
  readonly registry: Registry;
  readonly log: Logger;
  /** false makes /readyz answer 503 (starting, shutting down). */
  readonly ready: () => boolean | Promise<boolean>;
  /** Dependencies /readyz checks too, each named in its 503 body when it fails (the state backend). */
  readonly checks?: readonly ReadyCheck[];
  /**
   * The quarantine API and page, served when admin.tokenFile is set (the token is read here). A
   * function, so the service is built only when it is served.
   */
  readonly quarantine?: () => QuarantineService;
  /** admin.tokenFile, resolved against the working directory. */
  readonly tokenFile?: string;
}

/**
 * The admin HTTP server of every long-running command (relay, helper, milter, `sandgate admin`):
 * /healthz, /readyz, /metrics, and the quarantine API and page when there is a token. Built and
 * listening; the caller closes it.
 */
export async function startAdminServer(
  b: AdminBuild,
): Promise<{ server: AdminServer; host: string; port: number }> {
  const server = new AdminServer({
    registry: b.registry,
    log: b.log,
    ready: b.ready,
    ...(b.checks !== undefined ? { checks: b.checks } : {}),
  });
  if (b.quarantine !== undefined && b.tokenFile !== undefined) {
    registerQuarantineRoutes(server, {
      service: b.quarantine(),
      token: readAdminToken(b.tokenFile),
      log: b.log,
    });
  }
  const at = await server.listen(b.config.admin.listen.host, b.config.admin.listen.port);
  return { server, ...at };
}
