import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SandgateError } from '../core/errors.js';
import type { CliIo } from './io.js';
import { loadConfig, type LoadedConfig } from './load-config.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Options every command that loads a configuration accepts. */
export const CONFIG_OPTIONS = {
  config: { type: 'string', short: 'c' },
  set: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Options;

/** parseArgs with an error that names the command and the bad flag. */
export function parseCommandArgs<O extends Options>(
  command: string,
  argv: string[],
  options: O,
  allowPositionals = true,
) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (cause) {
    throw new SandgateError(
      'ERR_CONFIG_INVALID',
      `sandgate ${command}: ${cause instanceof Error ? cause.message : String(cause)}`,
      {
        cause,
      },
    );
  }
}

export function loadConfigFromArgs(
  values: { config?: string | undefined; set?: string[] | undefined },
  io: CliIo,
): LoadedConfig {
  return loadConfig({
    ...(values.config !== undefined ? { file: values.config } : {}),
    env: io.env,
    cwd: io.cwd,
    sets: values.set ?? [],
  });
}
