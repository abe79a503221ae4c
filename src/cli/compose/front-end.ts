/**
 * The life of a long-running network front end (`sandgate relay`, `sandgate milter`): arguments
 * and configuration, the runtime, the front end listening, the admin server, then a graceful stop
 * on SIGTERM or SIGINT (messages in flight finish), with the same log lines for each (its
 * `<name>.stopping`, `<name>.failed` and `<name>.stopped` events) and the same exit codes.
 */
import { resolve } from 'node:path';
import { Counter } from 'prom-client';
import type { AdminServer } from '../../admin/server.js';
import type { Config } from '../../config/schema.js';
import { describeError, isSandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { adminTokenFile } from '../admin-token.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { createRuntime, type Runtime } from '../runtime.js';
import { stopSignal } from '../signals.js';
import { startAdminServer } from './admin.js';
import { createQuarantineService } from './quarantine.js';
import { stateCheck } from './state.js';

/** A front end built on the runtime, not yet listening. */
export interface FrontEnd {
  listen(): Promise<unknown>;
  /** Stops accepting, lets messages in flight finish (or tempfails them at the shutdown timeout). */
  close(): Promise<void>;
  /** Last, after the front end and the admin server have closed (the relay's queue). */
  dispose?(): Promise<void>;
}

export interface FrontEndSpec {
  readonly name: 'relay' | 'milter';
  readonly help: string;
  /** Its log events, written out so that docs/logging.md's catalogue test finds them. */
  readonly events: {
    readonly stopping: Readonly<Record<'event', string>>;
    readonly failed: Readonly<Record<'event', string>>;
    readonly stopped: Readonly<Record<'event', string>>;
  };
  /** `<prefix><name>_replies_total{code,action}`: the help text of the front end's reply counter. */
  readonly repliesHelp: string;
  build(b: {
    readonly config: Config;
    readonly runtime: Runtime;
    readonly log: Logger;
    readonly io: CliIo;
    /** Call for each message answered: counts the reply. */
    readonly replied: (m: { readonly code: number; readonly action: string }) => void;
  }): FrontEnd;
}

export async function serveFrontEnd(
  spec: FrontEndSpec,
  argv: string[],
  io: CliIo,
  stop?: Promise<void>,
): Promise<number> {
  const { name } = spec;
  let config: Config;
  try {
    const { values } = parseCommandArgs(name, argv, CONFIG_OPTIONS, false);
    if (values.help) {
      writeLine(io.stdout, spec.help);
      return EXIT.ok;
    }
    config = loadConfigFromArgs(values, io).config;
  } catch (err) {
    writeLine(io.stderr, `sandgate ${name}: ${describeError(err)}`);
    return EXIT.error;
  }
  const log = createLogger(config, 'stdout');
  const runtime = await createRuntime(config, { log, frontEnd: name, jobs: true, frontEndSummary: true });
  let frontEnd: FrontEnd | undefined;
  let admin: AdminServer | undefined;
  let stopping = false;
  try {
    const replies = new Counter({
      name: `${config.metrics.prefix}${name}_replies_total`,
      help: spec.repliesHelp,
      labelNames: ['code', 'action'],
      registers: [runtime.metrics.registry],
    });
    frontEnd = spec.build({
      config,
      runtime,
      log,
      io,
      replied: (m) => replies.inc({ code: String(m.code), action: m.action }),
    });
    await frontEnd.listen();
    if (config.admin.enabled) admin = await startAdmin(config, runtime, log, io, () => stopping);
    await (stop ?? stopSignal());
    stopping = true;
    log.info({ ...spec.events.stopping }, 'stopping: finishing messages in flight');
    await frontEnd.close();
    return EXIT.ok;
  } catch (err) {
    log.error(
      { ...spec.events.failed, code: isSandgateError(err) ? err.code : undefined, err: describeError(err) },
      `${name} failed`,
    );
    writeLine(io.stderr, `sandgate ${name}: ${describeError(err)}`);
    await frontEnd?.close().catch(() => undefined);
    return EXIT.error;
  } finally {
    await admin?.close().catch(() => undefined);
    await frontEnd?.dispose?.().catch(() => undefined);
    await runtime.close().catch(() => undefined);
    log.info({ ...spec.events.stopped }, `${name} stopped`);
    log.flush?.();
  }
}

/** The admin server; the quarantine API and page need a token, without one only health and metrics. */
async function startAdmin(
  config: Config,
  runtime: Runtime,
  log: Logger,
  io: CliIo,
  stopping: () => boolean,
): Promise<AdminServer> {
  const tokenFile = adminTokenFile(config);
  const started = await startAdminServer({
    config,
    registry: runtime.metrics.registry,
    log,
    ready: () => !stopping(),
    checks: [stateCheck(runtime.state)],
    quarantine: () => createQuarantineService(runtime),
    ...(tokenFile !== undefined ? { tokenFile: resolve(io.cwd, tokenFile.path) } : {}),
  });
  if (tokenFile !== undefined) {
    const host = started.host.includes(':') ? `[${started.host}]` : started.host;
    const url = `http://${host}:${started.port}/quarantine`;
    log.info(
      { event: 'admin.page', url, tokenFile: tokenFile.path, tokenCreated: tokenFile.created },
      `quarantine page: ${url} (token in ${tokenFile.path}${tokenFile.created ? ', created now' : ''})`,
    );
  }
  return started.server;
}
