import { closeSync, openSync } from 'node:fs';
import { packageVersion } from '../version.js';
import { resolve } from 'node:path';
import { pino } from 'pino';
import { helperSchema, type HelperConfig } from '../../config/helper.js';
import type { Config } from '../../config/schema.js';
import { printable } from '../../core/text.js';
import { describeError } from '../../core/errors.js';
import { silentLogger, type Logger } from '../../core/logger.js';
import type { CoreState } from '../../helper/core-state.js';
import { HelperSession } from '../../helper/helper.js';
import type { HelperSettings } from '../../helper/settings.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import { exitOnSignals } from '../signals.js';
import { stateCheck } from '../compose/state.js';

const HELP = `usage: sandgate helper [--config FILE] [--set KEY=VALUE]

The CommuniGate Pro Content Filtering helper: speaks the Helper protocol on stdin/stdout.
CommuniGate starts it (Settings -> General -> Helpers); see docs/communigate.md.
Logs go to log.file only; stdout carries protocol lines, stderr stays silent.`;

/** How long the runtime may take to close after QUIT or end of input before the process ends anyway. */
const CLOSE_BUDGET_MS = 2000;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const realProcess = io.stdin === process.stdin;
  if (realProcess) guardProcess();

  const notices: string[] = [];
  let brokenReason: string | undefined;
  let config: Config | undefined;
  try {
    const { values } = parseCommandArgs('helper', argv, CONFIG_OPTIONS, false);
    if (values.help) {
      writeLine(io.stdout, HELP);
      return EXIT.ok;
    }
    config = loadConfigFromArgs(values, io).config;
  } catch (err) {
    brokenReason = describe(err);
  }

  const { log, problem } =
    config === undefined ? { log: silentLogger, problem: undefined } : openLog(config, io.cwd);
  if (problem !== undefined) notices.push(problem);
  if (realProcess)
    process.on('warning', (w) => log.warn({ event: 'helper.process_warning', err: w }, 'process warning'));
  activeLog = log;

  const helper: HelperConfig = config?.helper ?? helperSchema.parse({});
  const settings: HelperSettings = {
    baseDir: resolve(io.cwd, helper.baseDirectory ?? '.'),
    deadlineMs: helper.deadline,
    concurrency: helper.concurrency,
    maxLineLength: helper.maxLineLength,
    maxProtocolVersion: helper.maxProtocolVersion,
    replies: { rejectWord: helper.rejectWord, addHeaders: helper.addHeaders, texts: helper.texts },
  };
  const banner =
    `sandgate helper ${packageVersion()} started: protocol <= ${settings.maxProtocolVersion}, ` +
    `deadline ${settings.deadlineMs / 1000}s, concurrency ${settings.concurrency}` +
    (config !== undefined ? `, scanners ${config.scan.chain.join(',')}` : '');
  log.info(
    {
      event: 'helper.start',
      baseDir: settings.baseDir,
      deadlineMs: settings.deadlineMs,
      concurrency: settings.concurrency,
    },
    banner,
  );

  // The session answers INTF at once; the core (state database, scanners) loads behind it, and
  // FILE requests wait for it. CommuniGate restarts helpers, so start-up time counts.
  let resolveCore!: (state: CoreState) => void;
  const core = new Promise<CoreState>((r) => {
    resolveCore = r;
  });
  const session = new HelperSession({
    input: io.stdin,
    output: io.stdout,
    settings,
    core,
    log,
    notices: [banner, ...notices],
  });
  const done = session.start();
  let runtime: Runtime | undefined;
  if (config !== undefined && brokenReason === undefined) {
    try {
      runtime = await startRuntime(config, log);
    } catch (err) {
      brokenReason = describe(err);
    }
  }
  if (brokenReason !== undefined)
    log.error({ event: 'helper.broken', reason: brokenReason }, 'cannot scan; answering tempfail');
  resolveCore(
    runtime !== undefined
      ? { evaluator: runtime.evaluator }
      : { brokenReason: brokenReason ?? 'no configuration' },
  );
  const admin =
    runtime !== undefined && config?.admin.enabled
      ? await startAdmin(runtime, config, log, session)
      : undefined;
  const result = await done;
  log.info({ event: 'helper.stop', ...result }, 'helper stopping');

  if (realProcess) {
    // CommuniGate waits for the process to end; whatever still holds the event loop must not keep it alive.
    io.stdin.destroy();
    setTimeout(() => process.exit(EXIT.ok), CLOSE_BUDGET_MS + 500).unref();
  }
  await admin?.close().catch(() => undefined);
  if (runtime !== undefined) {
    const closing = runtime
      .close()
      .catch((err: unknown) => log.warn({ event: 'helper.close_error', err }, 'close failed'));
    await Promise.race([closing, new Promise((r) => setTimeout(r, CLOSE_BUDGET_MS).unref())]);
  }
  return EXIT.ok;
}

let activeLog: Logger = silentLogger;

/** Loads the runtime module (SQLite, HTTP client, scanners) after giving queued input a turn. */
async function startRuntime(config: Config, log: Logger): Promise<Runtime> {
  await new Promise((r) => setImmediate(r));
  const { createRuntime } = await import('../runtime.js');
  await new Promise((r) => setImmediate(r));
  return createRuntime(config, { log, frontEnd: 'helper', jobs: true, frontEndSummary: true });
}

/**
 * Helper mode owns the process: nothing may reach stderr while running (CommuniGate reads it only
 * after exit). Process warnings go to the log; a crash logs, says so in a `* ` line, leaves its
 * reason on stderr (read after exit) and exits for CommuniGate's Auto-Restart.
 */
function guardProcess(): void {
  process.removeAllListeners('warning');
  // CommuniGate ends a helper with QUIT; a signal (a server shutdown, an operator) still removes
  // the helper's spool files on its way out.
  exitOnSignals();
  const crash = (err: unknown) => {
    activeLog.fatal({ event: 'helper.crash', err }, 'helper crashed');
    const text = err instanceof Error ? err.message : String(err);
    try {
      process.stdout.write(`* sandgate helper crashed: ${text.replace(/[\r\n]+/g, ' ')}\n`);
    } catch {
      // stdout gone: nothing to tell
    }
    process.stderr.write(
      `sandgate helper crashed: ${err instanceof Error ? (err.stack ?? text) : text}\n`,
      () => process.exit(1),
    );
    setTimeout(() => process.exit(1), 500).unref();
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
}

/**
 * The helper's logger: config log.file, opened here so a failure is known at once. No file: no
 * logging at all (stdout and stderr are off limits). A file that cannot be opened leaves the
 * helper running without logs and says so in a `* ` line.
 */
function openLog(config: Config, cwd: string): { log: Logger; problem?: string } {
  const file = config.log.file;
  if (file === undefined) return { log: silentLogger };
  const path = resolve(cwd, file);
  let fd: number;
  try {
    fd = openSync(path, 'a', 0o640);
  } catch (err) {
    return {
      log: silentLogger,
      problem: `cannot open the log file ${path}: ${(err as Error).message}; logging is off`,
    };
  }
  try {
    const stream = pino.destination({ fd, sync: false });
    // A full disk or a removed file must not crash the helper: logging just stops.
    stream.on('error', () => undefined);
    return { log: createLogger(config, 'file-or-none', { stream, name: 'sandgate-helper' }) };
  } catch (err) {
    closeSync(fd);
    return { log: silentLogger, problem: `cannot log to ${path}: ${(err as Error).message}; logging is off` };
  }
}

/**
 * The optional admin port (/healthz, /readyz, /metrics). Off by default: CommuniGate restarts the
 * helper, and an old instance may still hold the port, so failing to listen only says so.
 */
async function startAdmin(
  runtime: Runtime,
  config: Config,
  log: Logger,
  session: HelperSession,
): Promise<{ close(): Promise<void> } | undefined> {
  const { startAdminServer } = await import('../compose/admin.js');
  try {
    const { server, ...at } = await startAdminServer({
      config,
      registry: runtime.metrics.registry,
      log,
      ready: () => true,
      checks: [stateCheck(runtime.state)],
    });
    log.info({ event: 'helper.admin_listening', ...at }, 'admin port listening');
    session.notice(`admin port listening on ${at.host}:${at.port} (/healthz, /metrics)`);
    return server;
  } catch (err) {
    log.warn({ event: 'helper.admin_failed', err }, 'admin port not available');
    session.notice(
      `admin port ${config.admin.listen.host}:${config.admin.listen.port} not available: ${describe(err)}`,
    );
    return undefined;
  }
}

/** An error on one line, for a `* ` notice and the log. */
function describe(err: unknown): string {
  return printable(describeError(err));
}
