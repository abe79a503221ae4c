import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildSync } from 'esbuild';

/**
 * Bundles a TypeScript entry point into one plain ESM file for `node`, so a child process whose
 * memory a test measures runs sandgate's code as shipped, without a TypeScript loader in the
 * process (tsx alone adds about 35 MB of RSS). Native modules stay external: the bundle is written
 * under the project's node_modules/.cache, so they resolve from there.
 */
export function bundleForNode(entry: string): { file: string; remove: () => void } {
  const cache = join(import.meta.dirname, '..', '..', 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, 'sandgate-bundle-'));
  const outfile = join(dir, 'child.mjs');
  buildSync({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['better-sqlite3'],
    // Bundled CommonJS dependencies call require(); give the ESM bundle one.
    banner: {
      js: "import { createRequire as __sgRequire } from 'node:module'; const require = __sgRequire(import.meta.url);",
    },
    logLevel: 'error',
  });
  return { file: outfile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
