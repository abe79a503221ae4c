import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { SANDGATE_BIN } from './cli.js';

export interface RelayProcess {
  readonly child: ChildProcess;
  readonly relayPort: number;
  /** The admin port, when the config enables it. */
  readonly adminPort?: number;
  /** Every JSON log line the relay wrote to stdout so far (it keeps filling). */
  readonly records: Array<Record<string, unknown>>;
  /** Resolves with the first log record (already written or still to come) that matches. */
  waitForRecord(match: (r: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** What it wrote to stderr so far ('' unless started with `captureStderr`). */
  stderr(): string;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Starts the built `sandgate relay --config FILE` and resolves once it listens (and its admin port
 * too, when `withAdmin`), with the ports it logged: the config can ask for port 0. `env` adds to
 * (or overrides) this process's environment for the child only; `captureStderr` keeps its stderr
 * for stderr() instead of passing it through.
 */
export async function startRelayProcess(
  configFile: string,
  withAdmin = false,
  options: {
    readonly cwd?: string;
    readonly env?: Readonly<Record<string, string>>;
    readonly captureStderr?: boolean;
  } = {},
): Promise<RelayProcess> {
  const child = spawn(process.execPath, [SANDGATE_BIN, 'relay', '--config', configFile], {
    stdio: ['ignore', 'pipe', options.captureStderr === true ? 'pipe' : 'inherit'],
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.env !== undefined ? { env: { ...process.env, ...options.env } } : {}),
  });
  const records: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const watchers: Array<() => void> = [];
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  const ports: { relay?: number; admin?: number } = {};
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`relay exited with ${code} before listening ${stderr}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const rec = JSON.parse(line) as Record<string, unknown>;
        records.push(rec);
        for (const w of watchers.splice(0)) w();
        if (rec.event === 'relay.listening') ports.relay = rec.port as number;
        if (rec.event === 'admin.listening') ports.admin = rec.port as number;
        if (ports.relay !== undefined && (!withAdmin || ports.admin !== undefined)) resolve();
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    child,
    relayPort: ports.relay!,
    ...(ports.admin !== undefined ? { adminPort: ports.admin } : {}),
    records,
    stderr: () => stderr,
    waitForRecord: async (match) => {
      // Log lines are written asynchronously: the line about a reply can follow the reply itself.
      for (;;) {
        const hit = records.find(match);
        if (hit !== undefined) return hit;
        if (child.exitCode !== null) throw new Error('relay exited before writing the expected log line');
        await new Promise<void>((resolve) => watchers.push(resolve));
      }
    },
    stop,
  };
}
