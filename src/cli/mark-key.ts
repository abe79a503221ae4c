import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { SandgateError } from '../core/errors.js';

const KEY_BYTES = 32;

/**
 * The per-installation HMAC key for X-Sandgate-Mark. Created on first use (0600; link() makes the
 * creation atomic, so two processes starting together end up with the same key); every process
 * sharing the state directory reads the same file. An existing key is only read, never written
 * next to: it may be a file mounted read-only (the key every node of a cluster shares, a Docker
 * secret) in a directory this process cannot write.
 */
export function loadOrCreateMarkKey(path: string): Buffer {
  let text = readKey(path);
  if (text === undefined) {
    createKey(path);
    text = readKey(path);
  }
  return parseKey(path, text ?? '');
}

function parseKey(path: string, text: string): Buffer {
  if (!/^[0-9a-f]{64,}$/i.test(text)) {
    throw new SandgateError('ERR_SECRET_FILE', `the mark key ${path} is not at least 32 bytes of hex`, {
      details: { path },
    });
  }
  return Buffer.from(text, 'hex');
}

/** The key file's text, trimmed; undefined when there is no such file. */
function readKey(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SandgateError('ERR_SECRET_FILE', `cannot read the mark key ${path}`, {
      cause,
      details: { path },
    });
  }
}

/** Creates a new random key at path, unless another process got there first. */
function createKey(path: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    // Written whole under a private name, then linked into place: a reader never sees a half key.
    writeFileSync(tmp, randomBytes(KEY_BYTES).toString('hex') + '\n', { mode: 0o600 });
    linkSync(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new SandgateError('ERR_SECRET_FILE', `cannot create the mark key ${path}`, {
        cause: err,
        details: { path },
      });
    }
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Reads the mark key without creating it (`sandgate state status`); ERR_SECRET_FILE when unreadable. */
export function readMarkKey(path: string): Buffer {
  const text = readKey(path);
  if (text === undefined) {
    throw new SandgateError('ERR_SECRET_FILE', `cannot read the mark key ${path}: no such file`, {
      details: { path },
    });
  }
  return parseKey(path, text);
}
