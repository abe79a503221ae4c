import { resolve } from 'node:path';
import { Counter } from 'prom-client';
import { AdminServer } from '../../admin/server.js';
import { readAdminToken, registerQuarantineRoutes } from '../../admin/quarantine-routes.js';
import { createQuarantineService } from '../compose/quarantine.js';
import { adminTokenFile } from '../admin-token.js';
import { isSandgateError } from '../../core/errors.js';
import type { NextHop } from '../../config/relay.js';
import { RelayServer } from '../../smtp/server.js';
import { createQueueMode, type QueueMode } from '../../smtp/queue/index.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { stopSignal } from '../signals.js';
import { createRuntime } from '../runtime.js';

const HELP = `usage: sandgate relay [--config FILE] [--set KEY=VALUE]

Runs the inline SMTP relay: receives mail on relay.listen, scans it, hands clean mail on to
relay.nextHop (smtp://host:port, lmtp://host:port, or directory:PATH) and only then answers the
client. Stops gracefully on SIGTERM or SIGINT.`;

export interface RelayRunOptions {
  /** Resolves when the relay should stop (tests); default: SIGTERM or SIGINT. */
  readonly stop?: Promise<void>;
}

export async function run(argv: string[], io: CliIo, options: RelayRunOptions = {}): Promise<number> {
  let values: ReturnType<typeof parse>['values'];
  try {
    values = parse(argv).values;
  } catch (err) {
    writeLine(io.stderr, `sandgate relay: ${describe(err)}`);
    return EXIT.error;
  }
  if (values.help) {
    writeLine(io.stdout, HELP);
    return EXIT.ok;
  }
  let config;
  try {
    config = loadConfigFromArgs(values, io).config;
  } catch (err) {
    writeLine(io.stderr, `sandgate relay: ${describe(err)}`);
    return EXIT.error;
  }
  const log = createLogger(config, 'stdout');
  const runtime = createRuntime(config, { log, frontEnd: 'relay', jobs: true, frontEndSummary: true });
  const hop: NextHop =
    config.relay.nextHop.kind === 'directory'
      ? { kind: 'directory', path: resolve(io.cwd, config.relay.nextHop.path) }
      : config.relay.nextHop;
  let relay: RelayServer | undefined;
  let admin: AdminServer | undefined;
  let queue: QueueMode | undefined;
  let stopping = false;
  try {
    if (config.relay.mode === 'queue') {
      queue = createQueueMode({
        relay: config.relay,
        stateDir: config.stateDir,
        nextHop: hop,
        evaluator: runtime.evaluator,
        quarantine: runtime.quarantine,
        log,
        registry: runtime.metrics.registry,
        metricsPrefix: config.metrics.prefix,
      });
      queue.start();
    }
    relay = new RelayServer({
      relay: config.relay,
      evaluator: runtime.evaluator,
      log,
      spoolDir: runtime.spoolDir,
      maxMessageSize: config.relay.maxMessageSize ?? config.scan.maxMessageSize,
      memorySpoolThreshold: config.scan.memorySpoolThreshold,
      nextHop: hop,
      ...(queue ? { queue: queue.intake } : {}),
    });
    const replies = new Counter({
      name: `${config.metrics.prefix}relay_replies_total`,
      help: 'Replies to the final dot by SMTP code and action',
      labelNames: ['code', 'action'],
      registers: [runtime.metrics.registry],
    });
    relay.on('message', (m) => replies.inc({ code: String(m.code), action: m.action }));
    await relay.listen();
    if (config.admin.enabled) {
      admin = new AdminServer({ registry: runtime.metrics.registry, log, ready: () => !stopping });
      // The quarantine API and page need a token; without one only health and metrics are served.
      const tokenFile = adminTokenFile(config);
      if (tokenFile !== undefined) {
        registerQuarantineRoutes(admin, {
          service: createQuarantineService(runtime),
          token: readAdminToken(resolve(io.cwd, tokenFile.path)),
          log,
        });
      }
      const at = await admin.listen(config.admin.listen.host, config.admin.listen.port);
      if (tokenFile !== undefined) {
        const url = `http://${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}/quarantine`;
        log.info(
          { event: 'admin.page', url, tokenFile: tokenFile.path, tokenCreated: tokenFile.created },
          `quarantine page: ${url} (token in ${tokenFile.path}${tokenFile.created ? ', created now' : ''})`,
        );
      }
    }
    await (options.stop ?? stopSignal());
    stopping = true;
    log.info({ event: 'relay.stopping' }, 'stopping: finishing messages in flight');
    await relay.close();
    return EXIT.ok;
  } catch (err) {
    log.error(
      { event: 'relay.failed', code: isSandgateError(err) ? err.code : undefined, err: describe(err) },
      'relay failed',
    );
    writeLine(io.stderr, `sandgate relay: ${describe(err)}`);
    await relay?.close().catch(() => undefined);
    return EXIT.error;
  } finally {
    await admin?.close().catch(() => undefined);
    await queue?.close(config.relay.shutdownTimeout).catch(() => undefined);
    await runtime.close().catch(() => undefined);
    log.info({ event: 'relay.stopped' }, 'relay stopped');
    log.flush?.();
  }
}

function parse(argv: string[]) {
  return parseCommandArgs('relay', argv, CONFIG_OPTIONS, false);
}

function describe(err: unknown): string {
  return isSandgateError(err)
    ? `${err.message} [${err.code}]`
    : err instanceof Error
      ? err.message
      : String(err);
}
