import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import type { ConfigInput } from '../../src/config/schema.js';
import type { Evaluation } from '../../src/core/evaluation.js';
import { newMsgId } from '../../src/core/ids.js';
import type { Envelope, MessageSource } from '../../src/core/message.js';
import type { Finding } from '../../src/core/outcome.js';
import type { Scanner, ScanContext } from '../../src/core/scanner.js';
import { BufferMessage } from '../../src/mime/spool.js';
import type { Runtime } from '../../src/cli/runtime.js';
import { createQuarantineService } from '../../src/cli/compose/quarantine.js';
import type { AllowList } from '../../src/core/ports.js';
import type { QuarantineService } from '../../src/quarantine/index.js';
import { RulesScanner } from '../../src/sandbox/rules/rules-scanner.js';
import { LogCapture, startRuntime, testConfig } from '../support/runtime.js';
import { buildMessage } from '../support/specimens.js';

/** Wraps a real scanner and counts its calls. */
export class SpyScanner implements Scanner {
  calls = 0;
  readonly name: string;
  readonly backgroundMs: number;
  constructor(private readonly inner: Scanner) {
    this.name = inner.name;
    this.backgroundMs = inner.backgroundMs;
  }
  fingerprint(signal: AbortSignal): Promise<string> {
    return this.inner.fingerprint(signal);
  }
  scan(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    this.calls++;
    return this.inner.scan(message, ctx);
  }
}

export const ENVELOPE: Envelope = {
  sender: 'sender@example.org',
  recipients: ['rcpt@example.net', 'other@example.net'],
  clientAddress: '192.0.2.10',
  heloName: 'mx.example.org',
  frontEnd: 'relay',
};

/** A message whose attachment the rules engine blocks (blocked extension); `tag` varies the content. */
export function blockedMail(options: { subject?: string; tool?: string; received?: boolean } = {}): Buffer {
  const mail = buildMessage({
    subject: options.subject ?? 'the tool you asked for',
    attachments: [
      { filename: 'tool.exe', content: Buffer.from(options.tool ?? 'harmless in-house tool v1\n') },
    ],
  });
  if (!options.received) return mail;
  return Buffer.concat([
    Buffer.from(
      'Received: from mx.example.org (mx.example.org [192.0.2.10])\r\n\tby gw.example.net; Tue, 2 Jan 2024 10:00:01 +0000\r\n' +
        'Received: from client by mx.example.org; Tue, 2 Jan 2024 10:00:00 +0000\r\n',
    ),
    mail,
  ]);
}

export interface Harness {
  readonly runtime: Runtime;
  readonly rules: SpyScanner;
  readonly allowList: AllowList;
  readonly service: QuarantineService;
  readonly logs: LogCapture;
  evaluate(bytes: Buffer, envelope?: Envelope): Promise<Evaluation>;
  close(): Promise<void>;
}

export async function startHarness(
  stateDir: string,
  options: { config?: Partial<ConfigInput>; now?: () => number } = {},
): Promise<Harness> {
  const config = testConfig(stateDir, options.config);
  const logs = new LogCapture();
  // The rules scanner reads the allowlist from the state DB: the same wiring the lead adds in src/cli/scanners.ts.
  const holder: { list?: AllowList } = {};
  const lazyAllow = {
    has: async (h: string) => (await holder.list?.has(h)) ?? false,
    revision: async () => (await holder.list?.revision()) ?? '0.0',
  };
  const rules = new SpyScanner(
    new RulesScanner(config.scanners.rules, {
      spoolDir: join(stateDir, 'spool', 'rules'),
      allowList: lazyAllow,
    }),
  );
  const runtime = await startRuntime(stateDir, [rules], {
    ...(options.config ? { config: options.config } : {}),
    ...(options.now ? { now: options.now } : {}),
    logs,
    frontEnd: 'relay',
  });
  const allowList = runtime.state.allowList;
  holder.list = allowList;
  const service = createQuarantineService({
    config: runtime.config,
    state: runtime.state,
    markKey: runtime.markKey,
    log: runtime.log,
    spoolDir: runtime.spoolDir,
  });
  return {
    runtime,
    rules,
    allowList,
    service,
    logs,
    evaluate: (bytes, envelope = ENVELOPE) =>
      runtime.evaluator.evaluate(new BufferMessage(newMsgId(), envelope, bytes), {
        deadline: Date.now() + 30_000,
      }),
    close: () => runtime.close(),
  };
}

/** An in-memory CliIo: collects stdout and stderr. */
export function memoryIo(cwd: string) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const sink = (into: Buffer[], onWrite?: () => void) =>
    new Writable({
      write(chunk: Buffer, _enc, done) {
        into.push(Buffer.from(chunk));
        onWrite?.();
        done();
      },
    });
  const listeners: Array<() => void> = [];
  const io = {
    stdin: Readable.from([]),
    stdout: sink(out, () => listeners.forEach((l) => l())),
    stderr: sink(err),
    env: {} as Record<string, string | undefined>,
    cwd,
  };
  return {
    io,
    stdout: () => Buffer.concat(out),
    stderr: () => Buffer.concat(err).toString('utf8'),
    /** Resolves with the first stdout match (a ready line). */
    waitFor(re: RegExp): Promise<RegExpExecArray> {
      return new Promise((resolve) => {
        const check = () => {
          const m = re.exec(Buffer.concat(out).toString('utf8'));
          if (m) resolve(m);
          return m;
        };
        if (!check()) listeners.push(() => void check());
      });
    },
  };
}

export interface AdminHandle {
  readonly url: string;
  readonly token: string;
  stop(): Promise<number>;
}

/** Runs `sandgate admin` in-process on 127.0.0.1:0 and waits for its ready line. */
export async function startAdmin(stateDir: string, sets: readonly string[] = []): Promise<AdminHandle> {
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(stateDir, 'admin.token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const mem = memoryIo(stateDir);
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  const { run } = await import('../../src/cli/commands/admin.js');
  const args = [
    `stateDir=${stateDir}`,
    'admin.listen=127.0.0.1:0',
    `admin.tokenFile=${tokenFile}`,
    'log.level=silent',
    ...sets,
  ].flatMap((s) => ['--set', s]);
  const exit = run(args, mem.io, { stop: stopped });
  const ready = await Promise.race([
    mem.waitFor(/listening on (http:\/\/\S+)/),
    exit.then((code) => {
      throw new Error(`sandgate admin exited ${code}: ${mem.stderr()}`);
    }),
  ]);
  return {
    url: ready[1]!,
    token,
    stop: async () => {
      stop();
      return exit;
    },
  };
}
