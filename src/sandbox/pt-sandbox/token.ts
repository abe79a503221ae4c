import { readFileSync } from 'node:fs';
import { SandgateError } from '../../core/errors.js';

/**
 * The API token: from `tokenFile` when set, else from the environment variable named by
 * `tokenEnv`. Trimmed; never logged, never part of an error message.
 */
export function readToken(
  options: { readonly tokenEnv: string; readonly tokenFile?: string | undefined },
  env: Readonly<Record<string, string | undefined>>,
): string {
  if (options.tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.tokenFile, 'utf8');
    } catch (cause) {
      throw new SandgateError(
        'ERR_SECRET_FILE',
        `cannot read the PT Sandbox token file ${options.tokenFile}`,
        {
          cause,
          details: { path: options.tokenFile },
        },
      );
    }
    const token = text.trim();
    if (token === '') {
      throw new SandgateError('ERR_SECRET_FILE', `the PT Sandbox token file ${options.tokenFile} is empty`, {
        details: { path: options.tokenFile },
      });
    }
    return token;
  }
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
