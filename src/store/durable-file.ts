import { createWriteStream, statSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import type { Writable } from 'node:stream';

/**
 * The suffix of a file still being written: writers write `<path>.partial`, fsync it, rename it to
 * `path`, then fsync the directory; start-up recovery removes what still carries the suffix.
 */
export const PARTIAL = '.partial';

/**
 * Writes to `<path>.partial` (the stream is flushed to disk before its descriptor closes), then
 * renames it to `path`; returns the bytes written.
 */
export async function writeDurably(
  path: string,
  write: (out: Writable) => Promise<void>,
  options: { mode?: number } = {},
): Promise<number> {
  const tmp = path + PARTIAL;
  const out = createWriteStream(tmp, { flags: 'wx', mode: options.mode ?? 0o600, flush: true });
  await write(out);
  const size = statSync(tmp).size;
  await rename(tmp, path);
  return size;
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
