import net from 'node:net';
import { Readable } from 'node:stream';
import { relaySchema, type NextHop } from '../../src/config/relay.js';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import { createMetrics, type Metrics } from '../../src/core/metrics.js';
import type { RelayServer } from '../../src/smtp/server.js';
import { buildRelay, type QueueMode } from '../../src/cli/compose/relay.js';
import { SmtpClient, type Reply } from '../../src/smtp/smtp-client.js';
import type { QuarantineStore, RelayQueueStore, StatePorts } from '../../src/core/ports.js';
import type { QueueFileWriter } from '../../src/store/relay-queue.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { TestEvaluator } from './relay.js';

export interface QueueRelay {
  readonly relay: RelayServer;
  readonly mode: QueueMode;
  readonly port: number;
  readonly evaluator: TestEvaluator;
  readonly quarantine: QuarantineStore;
  /** The state the queue and the quarantine live in. */
  readonly state: StatePorts;
  readonly metrics: Metrics;
  close(): Promise<void>;
}

/** A queue-mode relay in this process on 127.0.0.1:0 with the test evaluator and a real quarantine store. */
export async function startQueueRelay(
  stateDir: string,
  nextHop: NextHop,
  options: {
    relay?: Record<string, unknown>;
    queue?: Record<string, unknown>;
    writer?: QueueFileWriter;
    /** Wraps the queue store the worker and intake use (a flaky state). */
    wrapStore?: (store: RelayQueueStore) => RelayQueueStore;
    log?: Logger;
    evaluator?: TestEvaluator;
  } = {},
): Promise<QueueRelay> {
  const config = relaySchema.parse({
    listen: '127.0.0.1:0',
    mode: 'queue',
    ...options.relay,
    nextHopOptions: { tls: 'none', timeout: '5s', ...((options.relay?.nextHopOptions as object) ?? {}) },
    queue: { retryMin: '50ms', retryMax: '400ms', ...options.queue },
  });
  const log = options.log ?? silentLogger;
  const evaluator = options.evaluator ?? new TestEvaluator();
  const state = openSqliteState(stateDir, {
    quarantineDir: `${stateDir}/quarantine`,
    ...(config.queue.dir !== undefined ? { queueDir: config.queue.dir } : {}),
    ...(options.writer ? { queueWriter: options.writer } : {}),
  });
  const quarantine = state.quarantine;
  const metrics = createMetrics({ defaultMetrics: false });
  const parts = buildRelay({
    relay: config,
    queueStore: options.wrapStore ? options.wrapStore(state.relayQueue) : state.relayQueue,
    nextHop,
    evaluator,
    quarantine,
    log,
    spoolDir: `${stateDir}/spool`,
    maxMessageSize: 50 * 1024 * 1024,
    memorySpoolThreshold: 256 * 1024,
    registry: metrics.registry,
    pollMs: 200,
  });
  const relay = parts.server;
  const mode = parts.queue as QueueMode;
  await mode.start();
  const { port } = await relay.listen('127.0.0.1', 0);
  return {
    relay,
    mode,
    port,
    evaluator,
    quarantine,
    state,
    metrics,
    async close() {
      await relay.close();
      await mode.close(2000);
      await state.close();
    },
  };
}

/**
 * A TCP gate in front of the sink: while down it drops every connection at once (the next hop is
 * unreachable), while up it passes bytes both ways.
 */
export class NextHopGate {
  up = false;
  connections = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(targetPort: number) {
    this.server = net.createServer((client) => {
      this.connections++;
      if (!this.up) {
        client.destroy();
        return;
      }
      const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
      this.sockets.add(client).add(upstream);
      const done = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', done).on('close', done);
      upstream.on('error', done).on('close', done);
      client.pipe(upstream).pipe(client);
    });
  }

  static async start(targetPort: number): Promise<NextHopGate> {
    const g = new NextHopGate(targetPort);
    await new Promise<void>((resolve) => g.server.listen(0, '127.0.0.1', resolve));
    return g;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get hop(): NextHop {
    return { kind: 'smtp', host: '127.0.0.1', port: this.port };
  }

  /** Down, and existing relayed connections cut. */
  down(): void {
    this.up = false;
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    this.down();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export interface SendResult {
  readonly mail: Reply;
  readonly rcpts: Reply[];
  readonly data?: Reply;
}

/** One SMTP client session on 127.0.0.1:port that can send several messages. */
export class Sender {
  private constructor(private readonly client: SmtpClient) {}

  static async open(port: number): Promise<Sender> {
    return new Sender(
      await SmtpClient.connect({
        host: '127.0.0.1',
        port,
        lmtp: false,
        name: 'client.test.local',
        timeout: 10_000,
        tls: 'none',
      }),
    );
  }

  get closed(): boolean {
    return this.client.closed;
  }

  async send(sender: string, recipients: readonly string[], body: string | Buffer): Promise<SendResult> {
    const mail = await this.client.command(`MAIL FROM:<${sender}>`);
    if (mail.code >= 300) return { mail, rcpts: [] };
    const rcpts: Reply[] = [];
    for (const r of recipients) rcpts.push(await this.client.command(`RCPT TO:<${r}>`));
    if (!rcpts.some((r) => r.code < 300)) {
      await this.client.command('RSET');
      return { mail, rcpts };
    }
    const [data] = await this.client.data(Readable.from([Buffer.from(body)]), 1);
    return { mail, rcpts, ...(data ? { data } : {}) };
  }

  close(): Promise<void> {
    return this.client.quit();
  }
}

/** Sends one message on a fresh connection. */
export async function sendOne(
  port: number,
  sender: string,
  recipients: readonly string[],
  body: string | Buffer,
): Promise<SendResult> {
  const s = await Sender.open(port);
  try {
    return await s.send(sender, recipients, body);
  } finally {
    await s.close();
  }
}

export function mail(n: number | string, extra = ''): string {
  return (
    `From: alice@example.test\r\nTo: bob@example.test\r\nSubject: queued ${n}\r\n` +
    `Message-ID: <${n}@queue.test>\r\n${extra}\r\nBody of message ${n}.\r\n`
  );
}

/** The Message-ID local part (`<N@queue.test>`) of a delivered message. */
export function messageNumber(bytes: Buffer): string | undefined {
  return /^Message-ID: <([^@>]+)@queue\.test>/im.exec(bytes.toString('latin1'))?.[1];
}
