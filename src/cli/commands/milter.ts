import { resolve } from 'node:path';
import { Counter, Gauge } from 'prom-client';
import type { AdminServer } from '../../admin/server.js';
import { describeError, isSandgateError } from '../../core/errors.js';
import { startAdminServer } from '../compose/admin.js';
import { adminTokenFile } from '../admin-token.js';
import { createQuarantineService } from '../compose/quarantine.js';
import { stateCheck } from '../compose/state.js';
import { MilterServer } from '../../milter/server.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { stopSignal } from '../signals.js';
import { createRuntime } from '../runtime.js';

const HELP = `usage: sandgate milter [--config FILE] [--set KEY=VALUE]

Runs the milter front end for Postfix (smtpd_milters): listens on milter.listen (inet:host:port or
unix:/path), rebuilds each message from the MTA's events, scans it and answers end-of-message:
accept with the verdict header, 550 5.7.1 inside the client's SMTP session, 451, or discard after
the quarantine copy is on disk. See docs/milter.md. Stops gracefully on SIGTERM or SIGINT.`;

export interface MilterRunOptions {
  /** Resolves when the milter should stop (tests); default: SIGTERM or SIGINT. */
  readonly stop?: Promise<void>;
  /** PROGRESS interval while a verdict is pending (benchmarks and tests). */
  readonly progressIntervalMs?: number;
}

export async function run(argv: string[], io: CliIo, options: MilterRunOptions = {}): Promise<number> {
  let values: ReturnType<typeof parse>['values'];
  try {
    values = parse(argv).values;
  } catch (err) {
    writeLine(io.stderr, `sandgate milter: ${describeError(err)}`);
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
    writeLine(io.stderr, `sandgate milter: ${describeError(err)}`);
    return EXIT.error;
  }
  const log = createLogger(config, 'stdout');
  const runtime = await createRuntime(config, { log, frontEnd: 'milter', jobs: true, frontEndSummary: true });
  let milter: MilterServer | undefined;
  let admin: AdminServer | undefined;
  let stopping = false;
  try {
    milter = new MilterServer({
      milter: config.milter,
      evaluator: runtime.evaluator,
      log,
      spoolDir: runtime.spoolDir,
      maxMessageSize: config.milter.maxMessageSize ?? config.scan.maxMessageSize,
      memorySpoolThreshold: config.scan.memorySpoolThreshold,
      ...(options.progressIntervalMs !== undefined ? { progressIntervalMs: options.progressIntervalMs } : {}),
    });
    const replies = new Counter({
      name: `${config.metrics.prefix}milter_replies_total`,
      help: 'Answers to end-of-message by SMTP code and action',
      labelNames: ['code', 'action'],
      registers: [runtime.metrics.registry],
    });
    const server = milter;
    new Gauge({
      name: `${config.metrics.prefix}milter_connections`,
      help: 'Milter connections open now (one per SMTP session of the MTA)',
      registers: [runtime.metrics.registry],
      collect() {
        this.set(server.openConnections);
      },
    });
    milter.on('message', (m) => replies.inc({ code: String(m.code), action: m.action }));
    await milter.listen();
    if (config.admin.enabled) {
      // The quarantine API and page need a token; without one only health and metrics are served.
      const tokenFile = adminTokenFile(config);
      admin = (
        await startAdminServer({
          config,
          registry: runtime.metrics.registry,
          log,
          ready: () => !stopping,
          checks: [stateCheck(runtime.state)],
          quarantine: () => createQuarantineService(runtime),
          ...(tokenFile !== undefined ? { tokenFile: resolve(io.cwd, tokenFile.path) } : {}),
        })
      ).server;
    }
    await (options.stop ?? stopSignal());
    stopping = true;
    log.info({ event: 'milter.stopping' }, 'stopping: finishing messages in flight');
    await milter.close();
    return EXIT.ok;
  } catch (err) {
    log.error(
      { event: 'milter.failed', code: isSandgateError(err) ? err.code : undefined, err: describeError(err) },
      'milter failed',
    );
    writeLine(io.stderr, `sandgate milter: ${describeError(err)}`);
    await milter?.close().catch(() => undefined);
    return EXIT.error;
  } finally {
    await admin?.close().catch(() => undefined);
    await runtime.close().catch(() => undefined);
    log.info({ event: 'milter.stopped' }, 'milter stopped');
    log.flush?.();
  }
}

function parse(argv: string[]) {
  return parseCommandArgs('milter', argv, CONFIG_OPTIONS, false);
}
