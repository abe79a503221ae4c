import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { SANDGATE_BIN } from './cli.js';

export interface MilterProcess {
  readonly child: ChildProcess;
  /** The TCP port it listens on (from its milter.listening line; the config may ask for port 0). */
  readonly port: number;
  /** Every JSON log line written to stdout so far (it keeps filling). */
  readonly records: Array<Record<string, unknown>>;
  /** Resolves with the first log record (already written or still to come) that matches. */
  waitForRecord(match: (r: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** SIGTERM (graceful), then waits for the exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: the process dies at once, mid-message or not. */
  kill(): Promise<void>;
}

/** Starts the built `sandgate milter --config FILE` and resolves once it listens. */
export async function startMilterProcess(configFile: string): Promise<MilterProcess> {
  const child = spawn(process.execPath, [SANDGATE_BIN, 'milter', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const records: Array<Record<string, unknown>> = [];
  const watchers: Array<() => void> = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exited.then(() => {
    for (const w of watchers.splice(0)) w();
  });
  const signal = async (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    return exited;
  };
  let port: number | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      void exited.then((code) => reject(new Error(`sandgate milter exited with ${code} before listening`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        const rec = JSON.parse(line) as Record<string, unknown>;
        records.push(rec);
        for (const w of watchers.splice(0)) w();
        if (rec.event === 'milter.listening') {
          port = rec.port as number;
          resolve();
        }
      });
    });
  } catch (err) {
    await signal('SIGTERM');
    throw err;
  }
  return {
    child,
    port: port!,
    records,
    waitForRecord: async (match) => {
      // Log lines are written asynchronously: the line about an answer can follow the answer.
      for (;;) {
        const hit = records.find(match);
        if (hit !== undefined) return hit;
        if (child.exitCode !== null || child.signalCode !== null)
          throw new Error('sandgate milter exited before writing the expected log line');
        await new Promise<void>((resolve) => watchers.push(resolve));
      }
    },
    stop: () => signal('SIGTERM'),
    kill: async () => {
      await signal('SIGKILL');
    },
  };
}

/** True when Debian's miltertest is installed; in CI a missing one is a failure, not a skip. */
export function miltertestAvailable(): boolean {
  const ok = spawnSync('sh', ['-c', 'command -v miltertest'], { encoding: 'utf8' }).status === 0;
  if (!ok && process.env.CI)
    throw new Error('miltertest is required in CI: .ci/run installs it with apt-get');
  return ok;
}
