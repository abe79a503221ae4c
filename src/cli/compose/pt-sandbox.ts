import { isInsecureHttpUrl, type PtSandboxConfig } from '../../config/pt-sandbox.js';
import { PT_TOKEN_FINGERPRINT, secretFingerprint } from '../../core/cluster.js';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Metrics } from '../../core/metrics.js';
import { PtSandboxClient, PtSandboxScanner, type LoadPort } from '../../sandbox/pt-sandbox/index.js';
import type { PtTaskStore } from '../../core/ports.js';
import { readConfiguredFile } from '../config-files.js';
import { readToken } from './pt-token.js';

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
  const ca =
    config.caFile !== undefined ? readConfiguredFile(config.caFile, 'scanners.ptSandbox.caFile') : undefined;
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
    /** new PtTaskStore(db) from src/store/pt-tasks.ts. */
    readonly tasks: PtTaskStore;
    /** Identifies this process in the pt_task table (e.g. `${hostname}:${pid}`). */
    readonly owner: string;
    /** `<stateDir>/spool/pt-sandbox` (src/cli/scanners.ts). */
    readonly spoolDir: string;
    readonly metrics?: Metrics;
    /** new PtLoadStore(db) from src/store/pt-load.ts: this process's window and queue for the watch. */
    readonly load?: LoadPort;
    readonly frontEnd?: string;
  },
): PtSandboxScanner {
  const client = createPtClient(config, deps);
  return new PtSandboxScanner({
    tokenFingerprint: secretFingerprint(readToken(config, deps.env), PT_TOKEN_FINGERPRINT),
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
