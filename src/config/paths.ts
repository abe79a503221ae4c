import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';

/**
 * What a path-valued key holds: `path`, a file or directory; `target`, a delivery target whose
 * `directory:` or `submitted:` form (or a bare `./`, `../` path) names a directory.
 */
export type PathKind = 'path' | 'target';

/**
 * The keys that hold file-system paths, marked in the schema itself so the loader finds every one
 * (src/cli/load-config.ts): in a configuration file a relative path is relative to that file's
 * directory; from the environment or `--set`, to the working directory.
 */
export const configPaths = z.registry<{ readonly kind: PathKind }>();

/** A file or directory path (a fresh schema per key: chaining after register() would drop the mark). */
export function pathValue() {
  return z.string().min(1).register(configPaths, { kind: 'path' });
}

/** The path a value of this kind names, if it is relative; undefined for absolute paths and host:port targets. */
export function relativePart(kind: PathKind, value: string): string | undefined {
  const v = value.trim();
  if (kind === 'path') return isAbsolute(v) ? undefined : v;
  const prefixed = /^(?:directory|submitted):(.+)$/.exec(v)?.[1];
  if (prefixed !== undefined) return isAbsolute(prefixed) ? undefined : prefixed;
  return /^\.\.?\//.test(v) ? v : undefined;
}

/** The value with its relative path resolved against `base` (a target keeps its kind prefix). */
export function resolvePathValue(kind: PathKind, value: string, base: string): string {
  const rel = relativePart(kind, value);
  if (rel === undefined) return value;
  if (kind === 'path') return resolve(base, rel);
  const prefix = /^(directory|submitted):/.exec(value.trim())?.[1] ?? 'directory';
  return `${prefix}:${resolve(base, rel)}`;
}
