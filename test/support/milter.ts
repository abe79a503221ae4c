/** Starts the milter front end in this process (real runtime and scanners, a real socket on port 0). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConfigInput } from '../../src/config/schema.js';
import type { Evaluation, EvaluateOptions, Evaluator } from '../../src/core/evaluation.js';
import type { Envelope, MessageSource } from '../../src/core/message.js';
import { readChunks } from '../../src/core/message.js';
import type { Scanner } from '../../src/core/scanner.js';
import { createRuntime, type Runtime } from '../../src/cli/runtime.js';
import { MilterServer, type MilterServerOptions } from '../../src/milter/server.js';
import type { MilterSummary } from '../../src/milter/session.js';
import { LogCapture, testConfig } from './runtime.js';

export interface SeenMessage {
  readonly msgId: string;
  readonly envelope: Envelope;
  /** The bytes the core was given: the message as the milter rebuilt it. */
  readonly bytes: Buffer;
  evaluation?: Evaluation;
}

export interface MilterHarness {
  readonly port: number;
  readonly server: MilterServer;
  readonly runtime: Runtime;
  readonly logs: LogCapture;
  readonly stateDir: string;
  readonly seen: SeenMessage[];
  readonly summaries: MilterSummary[];
  /** Resolves with the n-th summary line (1-based) once it is there. */
  summary(n: number): Promise<MilterSummary>;
  close(): Promise<void>;
}

/** The core as the milter calls it, with each message's bytes and evaluation kept for the test. */
class RecordingEvaluator implements Evaluator {
  readonly seen: SeenMessage[] = [];
  constructor(private readonly inner: Evaluator) {}
  async evaluate(message: MessageSource, options: EvaluateOptions): Promise<Evaluation> {
    const chunks: Buffer[] = [];
    for await (const c of readChunks(message)) chunks.push(c);
    const entry: SeenMessage = {
      msgId: message.msgId,
      envelope: message.envelope,
      bytes: Buffer.concat(chunks),
    };
    this.seen.push(entry);
    entry.evaluation = await this.inner.evaluate(message, options);
    return entry.evaluation;
  }
}

export async function startMilter(
  options: {
    config?: Partial<ConfigInput>;
    scanners?: readonly Scanner[];
    server?: Partial<Omit<MilterServerOptions, 'evaluator' | 'log'>>;
  } = {},
): Promise<MilterHarness> {
  const stateDir = mkdtempSync(join(tmpdir(), 'sg-milter-'));
  const logs = new LogCapture();
  const config = testConfig(stateDir, {
    scan: { chain: ['rules'] },
    ...options.config,
    milter: { listen: 'inet:127.0.0.1:0', ...(options.config?.milter ?? {}) },
  });
  const runtime = await createRuntime(config, {
    log: logs.logger,
    frontEnd: 'milter',
    frontEndSummary: true,
    ...(options.scanners ? { scanners: options.scanners } : {}),
  });
  const evaluator = new RecordingEvaluator(runtime.evaluator);
  const server = new MilterServer({
    milter: config.milter,
    evaluator,
    log: logs.logger,
    spoolDir: runtime.spoolDir,
    maxMessageSize: config.milter.maxMessageSize ?? config.scan.maxMessageSize,
    memorySpoolThreshold: config.scan.memorySpoolThreshold,
    ...options.server,
  });
  const summaries: MilterSummary[] = [];
  const waiters: Array<() => void> = [];
  server.on('message', (m) => {
    summaries.push(m);
    for (const w of waiters.splice(0)) w();
  });
  const bound = await server.listen();
  return {
    port: bound.kind === 'inet' ? bound.port : 0,
    server,
    runtime,
    logs,
    stateDir,
    seen: evaluator.seen,
    summaries,
    async summary(n) {
      while (summaries.length < n) await new Promise<void>((r) => waiters.push(r));
      return summaries[n - 1]!;
    },
    async close() {
      await server.close();
      await runtime.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
