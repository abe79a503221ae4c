import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.js';

/** Keys whose values never reach a log line (compared lower-case), wherever they appear. */
const SECRET_KEYS = new Set(['token', 'apikey', 'password', 'authorization', 'x-api-key']);
/** How deep redactSecrets looks into nested plain objects (log objects are shallow). */
const REDACT_DEPTH = 4;
const REDACTED = '[redacted]';
const BINDING_SERIALIZERS = Object.fromEntries(
  ['token', 'apiKey', 'apikey', 'password', 'Password', 'authorization', 'Authorization', 'x-api-key'].map(
    (k) => [k, () => REDACTED],
  ),
);

/**
 * The second line of defence behind "secrets are never logged": the value of any key named
 * token, apiKey, password, authorization or x-api-key (any case), at the top level or inside
 * nested plain objects and arrays, becomes "[redacted]". Returns `obj` itself when there is
 * nothing to redact, so the usual line costs one pass over its keys (pino's own path redaction
 * with wildcards cost about 15 µs per line on the relay's hot path).
 */
export function redactSecrets<T>(obj: T, depth = 0): T {
  if (depth >= REDACT_DEPTH || obj === null || typeof obj !== 'object') return obj;
  if (Array.isArray(obj)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < obj.length; i++) {
      const v: unknown = obj[i];
      const r = redactSecrets(v, depth + 1);
      if (r !== v) (copy ??= obj.slice())[i] = r;
    }
    return (copy ?? obj) as T;
  }
  const proto: unknown = Object.getPrototypeOf(obj);
  if (proto !== Object.prototype && proto !== null) return obj;
  let copy: Record<string, unknown> | undefined;
  for (const key in obj) {
    const v: unknown = (obj as Record<string, unknown>)[key];
    const r = SECRET_KEYS.has(key.toLowerCase()) && v !== undefined ? REDACTED : redactSecrets(v, depth + 1);
    if (r !== v) (copy ??= { ...(obj as Record<string, unknown>) })[key] = r;
  }
  return (copy ?? obj) as T;
}

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
    formatters: { log: (o: Record<string, unknown>) => redactSecrets(o) },
    // Child bindings do not pass through formatters.log: their secret keys go through serializers.
    serializers: BINDING_SERIALIZERS,
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (extra.stream) return pino(options, extra.stream);
  if (config.log.file !== undefined) {
    // A regular file is written synchronously: one write per line from this thread (no thread-pool
    // round trip per line), and a line is in the file when the call returns. stdout and stderr
    // stay asynchronous, so a slow reader of the pipe (journald, docker) cannot stall the mail.
    return pino(options, pino.destination({ dest: config.log.file, sync: true, mkdir: true }));
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
