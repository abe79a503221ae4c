/** Builds PT Sandbox scanners against the fake for tests and the benchmark. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { ptSandboxSchema, type PtSandboxConfig } from '../../src/config/pt-sandbox.js';
import type { Logger } from '../../src/core/logger.js';
import type { Metrics } from '../../src/core/metrics.js';
import { BufferMessage } from '../../src/mime/spool.js';
import { createPtSandboxScanner } from '../../src/cli/compose/pt-sandbox.js';
import type { PtSandboxScanner } from '../../src/sandbox/pt-sandbox/index.js';
import type { PtLoadStore, PtTaskStore, StatePorts } from '../../src/core/ports.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { FAKE_PT_TOKEN } from '../fakes/fake-pt-sandbox.js';

/** Collects pino's JSON lines in memory. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly log: Logger;
  constructor(level: pino.Level = 'trace') {
    const lines = this.lines;
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(
          ...chunk
            .toString('utf8')
            .split('\n')
            .filter((l) => l !== ''),
        );
        done();
      },
    });
    this.log = pino({ level }, sink);
  }
  get records(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
  events(): string[] {
    return this.records.map((r) => String(r.event));
  }
}

export interface TestState {
  readonly dir: string;
  readonly state: StatePorts;
  readonly tasks: PtTaskStore;
  readonly load: PtLoadStore;
  close(): Promise<void>;
}

export function openTestState(dir = mkdtempSync(join(tmpdir(), 'sg-pt-'))): TestState {
  const state = openSqliteState(dir);
  return {
    dir,
    state,
    tasks: state.ptTasks,
    load: state.ptLoad,
    close: async () => {
      await state.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Config for the fake: fast polling, short backoff. */
export function testConfig(url: string, overrides: Record<string, unknown> = {}): PtSandboxConfig {
  return ptSandboxSchema.parse({
    url,
    tokenEnv: 'PT_TOKEN',
    polling: { firstDelay: '10ms', interval: '20ms', slowAfter: '10s', slowInterval: '50ms' },
    retries: { attempts: 3, backoff: '10ms' },
    requestTimeout: '5s',
    connectTimeout: '1s',
    ...overrides,
  });
}

export function makeScanner(
  config: PtSandboxConfig,
  state: TestState,
  options: { log?: Logger; owner?: string; token?: string; metrics?: Metrics; frontEnd?: string } = {},
): PtSandboxScanner {
  return createPtSandboxScanner(config, {
    env: { PT_TOKEN: options.token ?? FAKE_PT_TOKEN },
    log: options.log ?? new LogCapture('fatal').log,
    tasks: state.tasks,
    load: state.load,
    owner: options.owner ?? 'test-owner',
    spoolDir: join(state.dir, 'spool'),
    ...(options.metrics !== undefined ? { metrics: options.metrics } : {}),
    ...(options.frontEnd !== undefined ? { frontEnd: options.frontEnd } : {}),
  });
}

const ENVELOPE = { sender: 'a@example.org', recipients: ['b@example.net'], frontEnd: 'cli' };

let seq = 0;
export function message(
  text: string,
  msgId = `sg-test${(seq++).toString(36).padStart(4, '0')}-0123456789`,
): BufferMessage {
  return new BufferMessage(msgId, ENVELOPE, Buffer.from(text.replace(/\r?\n/g, '\r\n')));
}

/** A simple message; `extraHeaders` go on top (e.g. a Received line). */
export function simpleMail(
  body: string,
  options: { subject?: string; extraHeaders?: string[] } = {},
): string {
  return [
    ...(options.extraHeaders ?? []),
    'From: a@example.org',
    'To: b@example.net',
    `Subject: ${options.subject ?? 'test'}`,
    'Message-ID: <m1@example.org>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    body,
    '',
  ].join('\n');
}

/** A multipart message with one base64 attachment. */
export function mailWithAttachment(options: {
  body?: string;
  filename: string;
  contentType?: string;
  content: Buffer | string;
  headers?: string[];
}): string {
  const b64 = Buffer.from(options.content)
    .toString('base64')
    .replace(/(.{76})/g, '$1\n');
  return [
    ...(options.headers ?? []),
    'From: a@example.org',
    'To: b@example.net',
    'Subject: with attachment',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="BOUNDARY"',
    '',
    '--BOUNDARY',
    'Content-Type: text/plain; charset=utf-8',
    '',
    options.body ?? 'see attached',
    '--BOUNDARY',
    `Content-Type: ${options.contentType ?? 'application/octet-stream'}; name="${options.filename}"`,
    `Content-Disposition: attachment; filename="${options.filename}"`,
    'Content-Transfer-Encoding: base64',
    '',
    b64,
    '--BOUNDARY--',
    '',
  ].join('\n');
}
