import { resolve } from 'node:path';
import { Counter } from 'prom-client';
import type { AdminServer } from '../../admin/server.js';
import { startAdminServer } from '../compose/admin.js';
import { createQuarantineService } from '../compose/quarantine.js';
import { adminTokenFile } from '../admin-token.js';
import { describeError, isSandgateError } from '../../core/errors.js';
import type { NextHop } from '../../config/relay.js';
import type { RelayServer } from '../../smtp/server.js';
import { buildRelay, type QueueMode } from '../compose/relay.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { stopSignal } from '../signals.js';
import { createRuntime } from '../runtime.js';
import { stateCheck } from '../compose/state.js';

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
    writeLine(io.stderr, `sandgate relay: ${describeError(err)}`);
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
    writeLine(io.stderr, `sandgate relay: ${describeError(err)}`);
    return EXIT.error;
  }
  const log = createLogger(config, 'stdout');
  const runtime = await createRuntime(config, { log, frontEnd: 'relay', jobs: true, frontEndSummary: true });
  const configured = config.relay.nextHop;
  const hop: NextHop =
    configured.kind === 'directory' || configured.kind === 'submitted'
      ? { kind: configured.kind, path: resolve(io.cwd, configured.path) }
      : configured;
  let relay: RelayServer | undefined;
  let admin: AdminServer | undefined;
  let queue: QueueMode | undefined;
  let stopping = false;
  try {
    const parts = buildRelay({
      relay: config.relay,
      nextHop: hop,
      evaluator: runtime.evaluator,
      quarantine: runtime.quarantine,
      log,
      ...(config.relay.mode === 'queue' ? { queueStore: runtime.state.relayQueue } : {}),
      spoolDir: runtime.spoolDir,
      maxMessageSize: config.relay.maxMessageSize ?? config.scan.maxMessageSize,
      memorySpoolThreshold: config.scan.memorySpoolThreshold,
      registry: runtime.metrics.registry,
      metricsPrefix: config.metrics.prefix,
    });
    relay = parts.server;
    queue = parts.queue;
    await queue?.start();
    const replies = new Counter({
      name: `${config.metrics.prefix}relay_replies_total`,
      help: 'Replies to the final dot by SMTP code and action',
      labelNames: ['code', 'action'],
      registers: [runtime.metrics.registry],
    });
    relay.on('message', (m) => replies.inc({ code: String(m.code), action: m.action }));
    await relay.listen();
    if (config.admin.enabled) {
      // The quarantine API and page need a token; without one only health and metrics are served.
      const tokenFile = adminTokenFile(config);
      const started = await startAdminServer({
        config,
        registry: runtime.metrics.registry,
        log,
        ready: () => !stopping,
        checks: [stateCheck(runtime.state)],
        quarantine: () => createQuarantineService(runtime),
        ...(tokenFile !== undefined ? { tokenFile: resolve(io.cwd, tokenFile.path) } : {}),
      });
      admin = started.server;
      if (tokenFile !== undefined) {
        const host = started.host.includes(':') ? `[${started.host}]` : started.host;
        const url = `http://${host}:${started.port}/quarantine`;
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
      { event: 'relay.failed', code: isSandgateError(err) ? err.code : undefined, err: describeError(err) },
      'relay failed',
    );
    writeLine(io.stderr, `sandgate relay: ${describeError(err)}`);
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
