import { SandgateError } from '../../core/errors.js';
import { readSecretFile } from '../config-files.js';

/**
 * The API token: from `tokenFile` when set, else from the environment variable named by
 * `tokenEnv`. Trimmed; never logged, never part of an error message.
 */
export function readToken(
  options: { readonly tokenEnv: string; readonly tokenFile?: string | undefined },
  env: Readonly<Record<string, string | undefined>>,
): string {
  if (options.tokenFile !== undefined)
    return readSecretFile(options.tokenFile, 'scanners.ptSandbox.tokenFile');
  const token = env[options.tokenEnv]?.trim() ?? '';
  if (token === '') {
    throw new SandgateError(
      'ERR_CONFIG_INVALID',
      `no PT Sandbox token: set the environment variable ${options.tokenEnv} or scanners.ptSandbox.tokenFile`,
      { details: { path: 'scanners.ptSandbox.tokenEnv', env: options.tokenEnv } },
    );
  }
  return token;
}
