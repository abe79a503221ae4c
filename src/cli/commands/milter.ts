import { Gauge } from 'prom-client';
import { MilterServer } from '../../milter/server.js';
import { serveFrontEnd } from '../compose/front-end.js';
import type { CliIo } from '../io.js';

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

export function run(argv: string[], io: CliIo, options: MilterRunOptions = {}): Promise<number> {
  return serveFrontEnd(
    {
      name: 'milter',
      help: HELP,
      events: {
        stopping: { event: 'milter.stopping' },
        failed: { event: 'milter.failed' },
        stopped: { event: 'milter.stopped' },
      },
      repliesHelp: 'Answers to end-of-message by SMTP code and action',
      build({ config, runtime, log, replied }) {
        const milter = new MilterServer({
          milter: config.milter,
          evaluator: runtime.evaluator,
          log,
          spoolDir: runtime.spoolDir,
          maxMessageSize: config.milter.maxMessageSize ?? config.scan.maxMessageSize,
          memorySpoolThreshold: config.scan.memorySpoolThreshold,
          ...(options.progressIntervalMs !== undefined
            ? { progressIntervalMs: options.progressIntervalMs }
            : {}),
        });
        new Gauge({
          name: `${config.metrics.prefix}milter_connections`,
          help: 'Milter connections open now (one per SMTP session of the MTA)',
          registers: [runtime.metrics.registry],
          collect() {
            this.set(milter.openConnections);
          },
        });
        milter.on('message', replied);
        return { listen: () => milter.listen(), close: () => milter.close() };
      },
    },
    argv,
    io,
    options.stop,
  );
}
