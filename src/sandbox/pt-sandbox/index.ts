import { readFileSync } from 'node:fs';
import { isInsecureHttpUrl, type PtSandboxConfig } from '../../config/pt-sandbox.js';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import { PtSandboxClient } from './client.js';
import { PtSandboxScanner } from './scanner.js';
import type { PtTaskStore } from '../../core/ports.js';
import type { LoadPort } from './task-runner.js';
import { readToken } from './token.js';

export { PtSandboxClient } from './client.js';
export { PtSandboxScanner } from './scanner.js';
export type { LoadPort } from './task-runner.js';

/**
 * A client for the configured appliance: token from the environment or tokenFile, TLS verified
 * against caFile (or the system CAs) unless insecureSkipVerify, which logs a warning, as does a
 * plain http:// url to another machine (allowed only with allowInsecureHttp).
 */
export function createPtClient(
  config: PtSandboxConfig,
  deps: { readonly env: Readonly<Record<string, string | undefined>>; readonly log: Logger },
): PtSandboxClient {
  if (config.url === undefined) {
    throw new SandgateError(
      'ERR_CONFIG_INVALID',
      'scanners.ptSandbox.url is not set (e.g. https://sandbox.example.net)',
      {
        details: { path: 'scanners.ptSandbox.url' },
      },
    );
  }
  const token = readToken(config, deps.env);
  let ca: Buffer | undefined;
  if (config.caFile !== undefined) {
    try {
      ca = readFileSync(config.caFile);
    } catch (cause) {
      throw new SandgateError('ERR_CONFIG_FILE', `cannot read scanners.ptSandbox.caFile ${config.caFile}`, {
        cause,
        details: { path: 'scanners.ptSandbox.caFile', file: config.caFile },
      });
    }
  }
  if (isInsecureHttpUrl(config.url)) {
    // Only with allowInsecureHttp: the schema refuses it otherwise.
    deps.log.warn(
      { event: 'pt.http_insecure', url: config.url },
      'PT Sandbox is reached over plain http (allowInsecureHttp): anyone on the path can read mail and the token; use https',
    );
  }
  if (config.insecureSkipVerify) {
    deps.log.warn(
      { event: 'pt.tls_insecure', url: config.url },
      'TLS verification of PT Sandbox is OFF (insecureSkipVerify): anyone on the path can read mail and the token; set caFile instead',
    );
  }
  return new PtSandboxClient({
    url: config.url,
    token,
    ...(ca !== undefined ? { ca } : {}),
    insecureSkipVerify: config.insecureSkipVerify,
    connectTimeoutMs: config.connectTimeout,
    requestTimeoutMs: config.requestTimeout,
    attempts: config.retries.attempts,
    backoffMs: config.retries.backoff,
    log: deps.log.child({ scanner: 'pt-sandbox' }),
  });
}

/** The PT Sandbox scanner for the chain (src/cli/scanners.ts). */
export function createPtSandboxScanner(
  config: PtSandboxConfig,
  deps: {
    readonly env: Readonly<Record<string, string | undefined>>;
    readonly log: Logger;
    /** The state's PtTaskStore (tasks in flight, shared by every process). */
    readonly tasks: PtTaskStore;
    /** Identifies this process in the pt_task table (e.g. `${hostname}:${pid}`). */
    readonly owner: string;
    /** `<stateDir>/spool/pt-sandbox` (src/cli/scanners.ts). */
    readonly spoolDir: string;
    readonly metrics?: Metrics;
    /** The state's PtLoadStore: this process's window and queue for the watch. */
    readonly load?: LoadPort;
    readonly frontEnd?: string;
  },
): PtSandboxScanner {
  const client = createPtClient(config, deps);
  return new PtSandboxScanner({
    config,
    client,
    tasks: deps.tasks,
    log: deps.log.child({ scanner: 'pt-sandbox' }),
    owner: deps.owner,
    spoolDir: deps.spoolDir,
    ...(deps.metrics !== undefined ? { metrics: deps.metrics } : {}),
    ...(deps.load !== undefined ? { load: deps.load } : {}),
    ...(deps.frontEnd !== undefined ? { frontEnd: deps.frontEnd } : {}),
  });
}
