import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { configSchema } from '../../../src/config/schema.js';
import { loadConfig, objectShape } from '../../../src/cli/load-config.js';

const EXAMPLE = join(import.meta.dirname, '../../../config/sandgate.example.yaml');
const FIRST_RUN = join(import.meta.dirname, '../../../config/first-run.yaml');

/** Every key path of the schema down to the leaves (a leaf is anything that is not an object). */
function leafPaths(schema: z.ZodType, prefix: string[] = []): string[][] {
  const shape = objectShape(schema);
  if (shape === undefined) return [prefix];
  return Object.entries(shape).flatMap(([key, child]) => leafPaths(child, [...prefix, key]));
}

function has(obj: unknown, path: readonly string[]): boolean {
  let node = obj;
  for (const key of path) {
    if (node === null || typeof node !== 'object' || !(key in node)) return false;
    node = (node as Record<string, unknown>)[key];
  }
  return true;
}

describe('config/sandgate.example.yaml', () => {
  const text = readFileSync(EXAMPLE, 'utf8');

  it('loads through the schema and states exactly the defaults', () => {
    const fromExample = loadConfig({ file: EXAMPLE, env: {}, cwd: '/' }).config;
    const defaults = loadConfig({ env: {}, cwd: '/' }).config;
    expect(fromExample).toEqual(defaults);
  });

  it('documents every key: set, or as a commented-out optional key', () => {
    const doc: unknown = parse(text);
    const missing = leafPaths(configSchema).filter(
      (path) => !has(doc, path) && !new RegExp(`^\\s*#\\s+${path.at(-1)!}:`, 'm').test(text),
    );
    expect(missing.map((p) => p.join('.'))).toEqual([]);
  });

  it('holds no secret values', () => {
    expect(text).not.toMatch(/^\s*(token|password|apiKey)\s*:/im);
  });
});

describe('config/first-run.yaml', () => {
  it('loads through the schema', () => {
    const { config } = loadConfig({ file: FIRST_RUN, env: {}, cwd: '/' });
    expect(config.relay.nextHop).toMatchObject({ kind: 'directory' });
    expect(config.relay.listen).toEqual({ host: '127.0.0.1', port: 10025 });
  });
});
