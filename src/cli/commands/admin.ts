import { resolve } from 'node:path';
import type { AdminServer } from '../../admin/server.js';
import { startAdminServer } from '../compose/admin.js';
import { describeError, SandgateError } from '../../core/errors.js';
import { createMetrics } from '../../core/metrics.js';
import { createRetentionJob } from '../compose/quarantine.js';
import { adminTokenFile } from '../admin-token.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { stopSignal } from '../signals.js';
import { openQuarantine } from './quarantine.js';
import { stateCheck } from '../compose/state.js';

const HELP = `usage: sandgate admin [--config FILE] [--set KEY=VALUE]

Runs the admin HTTP server on admin.listen (loopback by default) for sites that run only the
CommuniGate helper: /healthz, /readyz, /metrics, the quarantine API (bearer token from
admin.tokenFile) and the operator page at /quarantine. Also runs the quarantine retention job.
Prints "sandgate admin listening on http://HOST:PORT" when ready. Stops on SIGTERM or SIGINT.`;

export interface AdminRunOptions {
  /** Resolves when the server should stop (tests); default: SIGTERM or SIGINT. */
  readonly stop?: Promise<void>;
}

export async function run(argv: string[], io: CliIo, options: AdminRunOptions = {}): Promise<number> {
  let ctx: Awaited<ReturnType<typeof openQuarantine>> | undefined;
  let admin: AdminServer | undefined;
  let retention: ReturnType<typeof createRetentionJob> | undefined;
  try {
    const { values } = parseCommandArgs('admin', argv, CONFIG_OPTIONS, false);
    if (values.help) {
      writeLine(io.stdout, HELP);
      return EXIT.ok;
    }
    const config = loadConfigFromArgs(values, io).config;
    const tokenFile = adminTokenFile(config);
    if (tokenFile === undefined) {
      throw new SandgateError(
        'ERR_CONFIG_INVALID',
        'admin.tokenFile: required for sandgate admin (the quarantine API needs a token)',
      );
    }
    const tokenPath = resolve(io.cwd, tokenFile.path);
    const log = createLogger(config, 'stderr');
    ctx = await openQuarantine(config, log);
    const quarantine = ctx;
    const metrics = createMetrics({ prefix: config.metrics.prefix });
    let stopping = false;
    retention = createRetentionJob({
      config,
      quarantine: quarantine.state.quarantine,
      cluster: quarantine.state.cluster,
      log,
    });
    retention.start(config.quarantine.retentionInterval);
    const started = await startAdminServer({
      config,
      registry: metrics.registry,
      log,
      ready: () => !stopping,
      checks: [stateCheck(quarantine.state)],
      quarantine: () => quarantine.service,
      tokenFile: tokenPath,
    });
    admin = started.server;
    const host = started.host.includes(':') ? `[${started.host}]` : started.host;
    writeLine(io.stdout, `sandgate admin listening on http://${host}:${started.port}`);
    await (options.stop ?? stopSignal());
    stopping = true;
    return EXIT.ok;
  } catch (err) {
    writeLine(io.stderr, `sandgate admin: ${describeError(err)}`);
    return EXIT.error;
  } finally {
    await retention?.stop();
    await admin?.close().catch(() => undefined);
    await ctx?.close();
  }
}
