import { readFileSync } from 'node:fs';
import { SandgateError } from '../core/errors.js';

/**
 * Reads a secret named in the configuration (a password or token file): trimmed, never empty,
 * never logged. Errors name the key and the file (ERR_SECRET_FILE).
 */
export function readSecretFile(path: string, key: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new SandgateError('ERR_SECRET_FILE', `${key}: cannot read ${path}`, {
      cause,
      details: { path, key },
    });
  }
  const secret = text.trim();
  if (secret === '') {
    throw new SandgateError('ERR_SECRET_FILE', `${key}: ${path} is empty`, { details: { path, key } });
  }
  return secret;
}

/** Reads a file named in the configuration (a CA bundle, a certificate). Errors name the key and the file (ERR_CONFIG_FILE). */
export function readConfiguredFile(path: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new SandgateError('ERR_CONFIG_FILE', `${key}: cannot read ${path}`, {
      cause,
      details: { path, key },
    });
  }
}
