import { resolve } from 'node:path';
import type { NextHop } from '../../config/relay.js';
import { serveFrontEnd } from '../compose/front-end.js';
import { buildRelay } from '../compose/relay.js';
import type { CliIo } from '../io.js';

const HELP = `usage: sandgate relay [--config FILE] [--set KEY=VALUE]

Runs the inline SMTP relay: receives mail on relay.listen, scans it, hands clean mail on to
relay.nextHop (smtp://host:port, lmtp://host:port, or directory:PATH) and only then answers the
client. Stops gracefully on SIGTERM or SIGINT.`;

export interface RelayRunOptions {
  /** Resolves when the relay should stop (tests); default: SIGTERM or SIGINT. */
  readonly stop?: Promise<void>;
}

export function run(argv: string[], io: CliIo, options: RelayRunOptions = {}): Promise<number> {
  return serveFrontEnd(
    {
      name: 'relay',
      help: HELP,
      events: {
        stopping: { event: 'relay.stopping' },
        failed: { event: 'relay.failed' },
        stopped: { event: 'relay.stopped' },
      },
      repliesHelp: 'Replies to the final dot by SMTP code and action',
      build({ config, runtime, log, replied }) {
        const configured = config.relay.nextHop;
        const hop: NextHop =
          configured.kind === 'directory' || configured.kind === 'submitted'
            ? { kind: configured.kind, path: resolve(io.cwd, configured.path) }
            : configured;
        const { server, queue } = buildRelay({
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
        server.on('message', replied);
        return {
          async listen() {
            await queue?.start();
            await server.listen();
          },
          close: () => server.close(),
          ...(queue !== undefined ? { dispose: () => queue.close(config.relay.shutdownTimeout) } : {}),
        };
      },
    },
    argv,
    io,
    options.stop,
  );
}
