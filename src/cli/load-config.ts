import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LineCounter, parseDocument, isMap, isPair, isScalar, isSeq, type Document } from 'yaml';
import { z } from 'zod';
import { SandgateError } from '../core/errors.js';
import { configPaths, relativePart, resolvePathValue, type PathKind } from '../config/paths.js';
import { configSchema, type Config } from '../config/schema.js';

export interface LoadConfigInput {
  /** --config FILE; falls back to SANDGATE_CONFIG. */
  readonly file?: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** --set a.b=value flags, applied last. */
  readonly sets?: readonly string[];
}

export interface LoadedConfig {
  readonly config: Config;
  /** Absolute path of the YAML file read, if any. */
  readonly file?: string;
  /** Relative paths the file gave, each resolved against the file's directory (check-config warns). */
  readonly relativePaths: readonly RelativePath[];
}

/** A path-valued key that the configuration file gave as a relative path. */
export interface RelativePath {
  /** The key path, e.g. `stateDir` or `relay.nextHop`. */
  readonly key: string;
  /** As written in the file. */
  readonly value: string;
  /** What it means: resolved against the file's directory. */
  readonly resolved: string;
  readonly line?: number;
}

export const ENV_PREFIX = 'SANDGATE_';
/** Environment variables with our prefix that are not config overrides. */
const RESERVED_ENV = new Set(['SANDGATE_CONFIG']);

/**
 * Builds the effective configuration: schema defaults, then the YAML file, then SANDGATE_A__B
 * environment overrides, then --set flags. Errors name the key path, and the file and line when
 * the key came from the file. Every path-valued key (marked in the schema: src/config/paths.ts)
 * comes out absolute: a relative path in the file is relative to the file's directory (as
 * Prometheus reads its rule files), one from the environment or --set to the working directory.
 */
export function loadConfig(input: LoadConfigInput): LoadedConfig {
  const fileArg = input.file ?? input.env.SANDGATE_CONFIG;
  const file = fileArg !== undefined && fileArg !== '' ? resolve(input.cwd, fileArg) : undefined;
  let raw: Record<string, unknown> = {};
  let doc: Document | undefined;
  const lines = new LineCounter();
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (cause) {
      throw new SandgateError(
        'ERR_CONFIG_FILE',
        `cannot read the configuration file ${file}: ${errText(cause)}`,
        {
          cause,
          details: { file },
        },
      );
    }
    doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      const first = doc.errors[0];
      const pos = first?.linePos?.[0];
      throw new SandgateError(
        'ERR_CONFIG_FILE',
        `${file}${pos ? `:${pos.line}:${pos.col}` : ''}: YAML syntax error: ${first?.message.split('\n')[0] ?? 'unknown'}`,
        { details: { file, line: pos?.line } },
      );
    }
    const value: unknown = doc.toJS();
    if (value !== null && value !== undefined) {
      if (typeof value !== 'object' || Array.isArray(value)) {
        throw new SandgateError('ERR_CONFIG_FILE', `${file}: the configuration must be a mapping of keys`, {
          details: { file },
        });
      }
      raw = value as Record<string, unknown>;
    }
  }
  const relativePaths: RelativePath[] = [];
  if (file !== undefined) {
    resolveFilePaths(raw, configSchema, [], dirname(file), (key, value, resolved, path) => {
      const line = doc ? lineOf(doc, lines, path) : undefined;
      relativePaths.push({ key, value, resolved, ...(line !== undefined ? { line } : {}) });
    });
  }

  const fromEnv: Array<{ path: string[]; value: string; origin: string }> = [];
  for (const [name, value] of Object.entries(input.env)) {
    if (!name.startsWith(ENV_PREFIX) || RESERVED_ENV.has(name) || value === undefined) continue;
    const path = resolveEnvPath(name.slice(ENV_PREFIX.length).split('__'));
    if (path !== undefined) fromEnv.push({ path, value, origin: `environment variable ${name}` });
  }
  for (const o of fromEnv) setPath(raw, o.path, fromCwd(o.path, o.value, input.cwd));
  for (const set of input.sets ?? []) {
    const eq = set.indexOf('=');
    if (eq <= 0) {
      throw new SandgateError('ERR_CONFIG_INVALID', `--set ${set}: expected key.path=value`, {
        details: { flag: set },
      });
    }
    const path = set.slice(0, eq).split('.');
    setPath(raw, path, fromCwd(path, set.slice(eq + 1), input.cwd));
  }

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) =>
      describeIssue(issue, file, doc, lines, fromEnv, input.sets),
    );
    throw new SandgateError('ERR_CONFIG_INVALID', `invalid configuration:\n  ${problems.join('\n  ')}`, {
      details: { file: file ?? null, problems: problems.length },
    });
  }
  return { config: deepFreeze(parsed.data), ...(file !== undefined ? { file } : {}), relativePaths };
}

/** The path kind of a schema node, looking through optional/default/prefault wrappers. */
function pathKindOf(schema: z.ZodType | undefined): PathKind | undefined {
  let s: unknown = schema;
  for (let depth = 0; depth < 10 && s !== undefined; depth++) {
    const meta = configPaths.get(s as z.ZodType);
    if (meta !== undefined) return meta.kind;
    const def = (s as { _zod?: { def?: { innerType?: unknown } } })._zod?.def;
    s = def?.innerType;
  }
  return undefined;
}

/** The schema node of a key path, if the schema has it. */
function schemaAt(path: readonly string[]): z.ZodType | undefined {
  let schema: z.ZodType | undefined = configSchema;
  for (const key of path) schema = schema !== undefined ? objectShape(schema)?.[key] : undefined;
  return schema;
}

/** An override from the environment or --set: a relative path is relative to the working directory. */
function fromCwd(path: readonly string[], value: string, cwd: string): string {
  const kind = pathKindOf(schemaAt(path));
  return kind === undefined ? value : resolvePathValue(kind, value, cwd);
}

/** Resolves, in place, every relative path the file gave against the file's directory. */
function resolveFilePaths(
  node: Record<string, unknown>,
  schema: z.ZodType,
  path: readonly string[],
  base: string,
  found: (key: string, value: string, resolved: string, path: readonly string[]) => void,
): void {
  const shape = objectShape(schema);
  if (shape === undefined) return;
  for (const [key, value] of Object.entries(node)) {
    const child = shape[key];
    if (child === undefined) continue; // an unknown key: the schema names it
    const here = [...path, key];
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      resolveFilePaths(value as Record<string, unknown>, child, here, base, found);
      continue;
    }
    const kind = pathKindOf(child);
    if (kind === undefined || typeof value !== 'string' || relativePart(kind, value) === undefined) continue;
    const resolved = resolvePathValue(kind, value, base);
    node[key] = resolved;
    found(here.join('.'), value, resolved, here);
  }
}

function describeIssue(
  issue: z.core.$ZodIssue,
  file: string | undefined,
  doc: Document | undefined,
  lines: LineCounter,
  fromEnv: ReadonlyArray<{ path: string[]; origin: string }>,
  sets: readonly string[] | undefined,
): string {
  const keys = issue.code === 'unrecognized_keys' ? issue.keys : [undefined];
  return keys
    .map((extra) => {
      const path = [...issue.path.map(String), ...(extra !== undefined ? [extra] : [])];
      const dotted = path.join('.') || '(top level)';
      const message = issue.code === 'unrecognized_keys' ? 'unknown key' : issue.message;
      const env = fromEnv.find((e) => e.path.join('.') === dotted);
      if (env) return `${dotted}: ${message} (from ${env.origin})`;
      if (sets?.some((s) => s.startsWith(`${dotted}=`))) return `${dotted}: ${message} (from --set)`;
      const line = doc ? lineOf(doc, lines, path) : undefined;
      const where = file ? ` (${file}${line ? `:${line}` : ''})` : '';
      return `${dotted}: ${message}${where}`;
    })
    .join('\n  ');
}

function lineOf(doc: Document, lines: LineCounter, path: readonly string[]): number | undefined {
  // Walk down as far as the file has the path; report the line of the deepest node found.
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const key of path) {
    if (isSeq(node)) {
      // A list entry (relay.trustedPeers.1): the line of that entry.
      const item: unknown = node.items[Number(key)];
      if (item === undefined) break;
      offset = (item as { range?: [number, number, number] }).range?.[0] ?? offset;
      node = item;
      continue;
    }
    if (!isMap(node)) break;
    const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === key);
    if (!pair || !isPair(pair)) break;
    offset = (pair.key as { range?: [number, number, number] }).range?.[0] ?? offset;
    node = pair.value;
  }
  return offset === undefined ? undefined : lines.linePos(offset).line;
}

/** Maps SNAKE_CASE segments to the schema's keys (memorySpoolThreshold, too-large); undefined if the first segment is not ours. */
function resolveEnvPath(segments: readonly string[]): string[] | undefined {
  let schema: z.ZodType | undefined = configSchema;
  const path: string[] = [];
  for (const [i, segment] of segments.entries()) {
    const shape: Record<string, z.ZodType> | undefined =
      schema !== undefined ? objectShape(schema) : undefined;
    const want = normalise(segment);
    const key: string | undefined = shape ? Object.keys(shape).find((k) => normalise(k) === want) : undefined;
    if (key === undefined) {
      if (i === 0) return undefined; // not a config override (a secret, another tool's variable)
      path.push(...segments.slice(i).map((s) => s.toLowerCase()));
      return path; // an unknown nested key: the schema names it
    }
    path.push(key);
    schema = shape?.[key];
  }
  return path;
}

/** The keys of a zod object schema, looking through default/prefault/optional/pipe wrappers. */
export function objectShape(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  let s: unknown = schema;
  for (let depth = 0; depth < 10 && s !== undefined; depth++) {
    if (s instanceof z.ZodObject) return s.shape;
    const def = (s as { _zod?: { def?: { innerType?: unknown; in?: unknown } } })._zod?.def;
    s = def?.innerType ?? def?.in;
  }
  return undefined;
}

function normalise(key: string): string {
  return key.replace(/[-_]/g, '').toLowerCase();
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  const last = path[path.length - 1];
  if (last !== undefined) node[last] = value;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const SECRET_KEY = /(password|secret|token|apikey)$/i;

/** A copy with secret values replaced; names of secret files and env vars are kept (they are not secrets). */
export function redactConfig(value: unknown, key = ''): unknown {
  if (Array.isArray(value)) return value.map((v) => redactConfig(v));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k)]));
  }
  if (typeof value === 'string' && SECRET_KEY.test(key)) return '[redacted]';
  return value;
}
