import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { relaySchema, type NextHop, type RelayConfig } from '../../src/config/relay.js';
import type { Evaluation, Evaluator } from '../../src/core/evaluation.js';
import { silentLogger, type Logger } from '../../src/core/logger.js';
import type { MessageSource } from '../../src/core/message.js';
import type { Action } from '../../src/core/policy.js';
import type { RelayServer } from '../../src/smtp/server.js';
import { buildRelay } from '../../src/cli/compose/relay.js';

export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';

async function readAll(s: Readable): Promise<string> {
  let out = '';
  for await (const c of s) out += (c as Buffer).toString('latin1');
  return out;
}

/**
 * A small evaluator for relay tests: EICAR -> reject (threat "EICAR-Test-File"); a header
 * `X-Test-Action: <action>` forces that action; `X-Test-Delay: <ms>` waits first.
 * Delivered mail gets `X-Sandgate-Verdict: clean`, and inbound X-Sandgate-Verdict is stripped.
 */
export class TestEvaluator implements Evaluator {
  readonly seen: Array<{
    msgId: string;
    size: number;
    sender: string;
    recipients: readonly string[];
    text: string;
  }> = [];
  /** Throw instead of answering. */
  throwError = false;
  /** msgIds whose evaluation was told to stop (the client went away). */
  readonly aborted: string[] = [];

  async evaluate(
    message: MessageSource,
    options: { deadline: number; signal?: AbortSignal },
  ): Promise<Evaluation> {
    const started = Date.now();
    const text = await readAll(message.open());
    this.seen.push({
      msgId: message.msgId,
      size: message.size,
      sender: message.envelope.sender,
      recipients: message.envelope.recipients,
      text,
    });
    if (this.throwError) throw new Error('test evaluator failure');
    const delay = /^X-Test-Delay: (\d+)/im.exec(text);
    if (delay) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Number(delay[1]));
        options.signal?.addEventListener(
          'abort',
          () => {
            this.aborted.push(message.msgId);
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
    }
    const forced = /^X-Test-Action: (\w+)/im.exec(text)?.[1] as Action | undefined;
    const malicious = text.includes('EICAR-STANDARD-ANTIVIRUS-TEST-FILE');
    const action: Action = forced ?? (malicious ? 'reject' : 'deliver');
    return {
      msgId: message.msgId,
      decision: {
        action,
        keepCopy: action !== 'deliver',
        verdict: malicious ? 'malicious' : action === 'tempfail' ? 'unscanned' : 'clean',
        reason: malicious ? 'malicious' : action === 'tempfail' ? 'failure:timeout' : 'clean',
        threats: malicious ? ['EICAR-Test-File'] : [],
        failOpen: false,
      },
      outcomes: [],
      contentKey: 'test',
      ...(action === 'quarantine' ? { quarantineId: 'q-test-1' } : {}),
      headers: action === 'deliver' ? [{ name: 'X-Sandgate-Verdict', value: 'clean' }] : [],
      stripHeaders: ['X-Sandgate-Verdict'],
      alreadyJudged: false,
      ms: Date.now() - started,
    };
  }
}

export interface RelayHarness {
  readonly relay: RelayServer;
  readonly port: number;
  readonly spoolDir: string;
  readonly evaluator: TestEvaluator;
  spoolLeftovers(): string[];
  close(): Promise<void>;
}

/** Starts a RelayServer on 127.0.0.1:0 with the test evaluator and the given next hop. */
export async function startRelay(
  nextHop: NextHop,
  relay: Record<string, unknown> = {},
  extra: {
    maxMessageSize?: number;
    memorySpoolThreshold?: number;
    log?: Logger;
    evaluator?: TestEvaluator;
  } = {},
): Promise<RelayHarness> {
  const spoolDir = mkdtempSync(join(tmpdir(), 'sg-relay-spool-'));
  const config: RelayConfig = relaySchema.parse({ listen: '127.0.0.1:0', ...relay });
  const evaluator = extra.evaluator ?? new TestEvaluator();
  const { server } = buildRelay({
    relay: config,
    nextHop,
    evaluator,
    log: extra.log ?? silentLogger,
    spoolDir,
    maxMessageSize: extra.maxMessageSize ?? 50 * 1024 * 1024,
    memorySpoolThreshold: extra.memorySpoolThreshold ?? 256 * 1024,
  });
  const { port } = await server.listen('127.0.0.1', 0);
  return {
    relay: server,
    port,
    spoolDir,
    evaluator,
    spoolLeftovers: () => readdirSync(spoolDir),
    close: async () => {
      await server.close();
      rmSync(spoolDir, { recursive: true, force: true });
    },
  };
}
