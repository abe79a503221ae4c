/** The slice of pino's API the core uses; the CLI hands in a real pino logger. */
export interface LogFn {
  (obj: Record<string, unknown>, msg?: string): void;
}
export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  child(bindings: Record<string, unknown>): Logger;
  /** pino's: false when lines at `level` are dropped (a logger without it logs every level). */
  isLevelEnabled?(level: string): boolean;
}

const noop: LogFn = () => undefined;
export const silentLogger: Logger = {
  trace: noop,
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  fatal: noop,
  child: () => silentLogger,
};

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/**
 * A child logger made only when something is logged through it: a pino child serialises its
 * bindings when created, and most messages log nothing beyond their one summary line. Lines at
 * a level the parent has turned off are dropped without making the child.
 */
class LazyChild implements Logger {
  private made: Logger | undefined;

  constructor(
    private readonly make: () => Logger,
    private readonly parent: Logger,
  ) {}

  private line(level: Level, args: Parameters<LogFn>): void {
    if (this.parent.isLevelEnabled?.(level) === false) return;
    this.made ??= this.make();
    this.made[level](...args);
  }

  trace(...args: Parameters<LogFn>): void {
    this.line('trace', args);
  }
  debug(...args: Parameters<LogFn>): void {
    this.line('debug', args);
  }
  info(...args: Parameters<LogFn>): void {
    this.line('info', args);
  }
  warn(...args: Parameters<LogFn>): void {
    this.line('warn', args);
  }
  error(...args: Parameters<LogFn>): void {
    this.line('error', args);
  }
  fatal(...args: Parameters<LogFn>): void {
    this.line('fatal', args);
  }

  isLevelEnabled(level: string): boolean {
    return this.parent.isLevelEnabled?.(level) ?? true;
  }

  child(bindings: Record<string, unknown>): Logger {
    return new LazyChild(() => (this.made ??= this.make()).child(bindings), this);
  }
}

/** `parent.child(bindings)`, made on the first line logged through it. */
export function lazyChild(parent: Logger, bindings: Record<string, unknown>): Logger {
  return new LazyChild(() => parent.child(bindings), parent);
}
