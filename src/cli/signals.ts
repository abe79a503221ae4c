import { constants } from 'node:os';

/** Resolves on the first SIGTERM or SIGINT: the long-running commands' cue to stop gracefully. */
export function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGTERM', done);
      process.off('SIGINT', done);
      resolve();
    };
    process.once('SIGTERM', done);
    process.once('SIGINT', done);
  });
}

const ONE_SHOT_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * For commands without a graceful stop (`sandgate scan`, `quarantine`, the helper): SIGTERM,
 * SIGINT or SIGHUP end the process at once with 128 + the signal number, as the default action
 * would, but through process.exit(), so the 'exit' hooks run and remove this process's spool
 * files (src/mime/spool-owner.ts). Without it node dies by the signal and leaves them behind.
 */
export function exitOnSignals(): void {
  for (const signal of ONE_SHOT_SIGNALS) {
    process.once(signal, () => process.exit(128 + constants.signals[signal]));
  }
}
