import type { Logger } from '../../src/core/logger.js';

/** A logger that records lines (level, bindings, fields, msg) and counts the children made. */
export function recorder(level: 'trace' | 'debug' | 'info' = 'info') {
  const lines: Record<string, unknown>[] = [];
  let children = 0;
  const order = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at =
      (name: string) =>
      (obj: Record<string, unknown>, msg?: string): void => {
        if (order.indexOf(name) >= order.indexOf(level))
          lines.push({ level: name, ...bindings, ...obj, msg });
      };
    return {
      trace: at('trace'),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      fatal: at('fatal'),
      isLevelEnabled: (l) => order.indexOf(l) >= order.indexOf(level),
      child: (more) => {
        children++;
        return make({ ...bindings, ...more });
      },
    };
  };
  return { root: make({}), lines, children: () => children };
}
