import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import type { Config } from '../core/config/schema.js';

/** Paths pino blanks out wherever they appear: tokens, passwords, authorization headers. */
export const REDACT_PATHS = [
  'token',
  '*.token',
  'apiKey',
  '*.apiKey',
  'password',
  '*.password',
  'headers.authorization',
  'headers["x-api-key"]',
  '*.headers["x-api-key"]',
];

export interface LoggerTarget {
  /** stdout: relay and CLI; file: config log.file; none: nowhere (helper without a log file). */
  readonly kind: 'stdout' | 'stderr' | 'file' | 'none';
}

/**
 * The root logger. Helper mode never logs to stdout or stderr: it passes a file or 'none'.
 * Throws if the log file cannot be opened (the helper catches that and stays up).
 */
export function createLogger(
  config: Pick<Config, 'log'>,
  target: 'stdout' | 'stderr' | 'file-or-none',
  extra: { stream?: DestinationStream; name?: string } = {},
): PinoLogger {
  const options = {
    level: config.log.level,
    base: { pid: process.pid, ...(extra.name ? { name: extra.name } : {}) },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (extra.stream) return pino(options, extra.stream);
  if (config.log.file !== undefined) {
    return pino(options, pino.destination({ dest: config.log.file, sync: false, mkdir: true }));
  }
  switch (target) {
    case 'stdout':
      return pino(options, pino.destination({ fd: 1, sync: false }));
    case 'stderr':
      return pino(options, pino.destination({ fd: 2, sync: false }));
    case 'file-or-none':
      return pino({ ...options, level: 'silent' });
  }
}
