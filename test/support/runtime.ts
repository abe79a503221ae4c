import { Writable } from 'node:stream';
import { pino } from 'pino';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import type { Metrics } from '../../src/core/metrics.js';
import type { Envelope } from '../../src/core/message.js';
import { BufferMessage } from '../../src/mime/spool.js';
import { newMsgId } from '../../src/core/ids.js';
import type { Scanner } from '../../src/core/scanner.js';
import { createRuntime, type Runtime } from '../../src/cli/runtime.js';

/** Parsed log records, for asserting on `event` fields instead of message text. */
export class LogCapture {
  readonly records: Array<Record<string, unknown>> = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _enc, done) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim()) this.records.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  readonly logger = pino({ level: 'debug' }, this.stream);
  events(name: string): Array<Record<string, unknown>> {
    return this.records.filter((r) => r.event === name);
  }
  text(): string {
    return this.records.map((r) => JSON.stringify(r)).join('\n');
  }
}

export function testConfig(stateDir: string, extra: Partial<ConfigInput> = {}): Config {
  return configSchema.parse({ stateDir, ...extra });
}

export function startRuntime(
  stateDir: string,
  scanners: readonly Scanner[],
  options: {
    config?: Partial<ConfigInput>;
    now?: () => number;
    logs?: LogCapture;
    frontEnd?: string;
    metrics?: Metrics;
  } = {},
): Promise<Runtime> {
  const logs = options.logs ?? new LogCapture();
  return createRuntime(testConfig(stateDir, options.config), {
    log: logs.logger,
    frontEnd: options.frontEnd ?? 'test',
    scanners,
    ...(options.now ? { now: options.now } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
  });
}

export const ENVELOPE: Envelope = {
  sender: 'alice@example.test',
  recipients: ['bob@example.test'],
  clientAddress: '192.0.2.10',
  frontEnd: 'test',
};

export function message(text: string, envelope: Envelope = ENVELOPE): BufferMessage {
  return new BufferMessage(newMsgId(), envelope, Buffer.from(text));
}

export const CLEAN_MAIL =
  'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\nMessage-ID: <1@example.test>\r\n\r\nJust text.\r\n';
