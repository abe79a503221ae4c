import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { bundleForNode } from '../../support/bundle.js';

const CHILD = fileURLToPath(new URL('./walk-big.child.ts', import.meta.url));
// Plain node, no TypeScript loader: the RSS measured is the walker's.
let bundled: ReturnType<typeof bundleForNode>;
beforeAll(() => {
  bundled = bundleForNode(CHILD);
});
afterAll(() => bundled.remove());
const HUNDRED_MB = 100 * 1024 * 1024;
const LIMIT = 150 * 1024 * 1024;

interface ChildResult {
  maxRssBytes: number;
  messageSize: number;
  summary: { parts: number; bytes: number; limit?: unknown };
  parts: { path: string; size: number; sha256: string; reread: string }[];
}

function runChild(kind: 'text' | 'attachment', spoolDir: string): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bundled.file, kind, String(HUNDRED_MB), spoolDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child exited ${code}: ${err}`));
      resolve(JSON.parse(out) as ChildResult);
    });
  });
}

describe('walkMessage memory (100 MB messages, streamed, in a child process)', () => {
  let spoolDir: string;
  beforeEach(() => {
    spoolDir = mkdtempSync(join(tmpdir(), 'sg-walk-big-'));
  });
  afterEach(() => {
    rmSync(spoolDir, { recursive: true, force: true });
  });

  it('walks one 100 MB text body under 150 MB peak RSS and removes its spool file', async () => {
    const r = await runChild('text', spoolDir);
    expect(r.messageSize).toBeGreaterThan(HUNDRED_MB);
    expect(r.summary.limit).toBeUndefined();
    expect(r.parts).toHaveLength(1);
    expect(r.parts[0]!.size).toBeGreaterThanOrEqual(HUNDRED_MB);
    expect(r.parts[0]!.reread).toBe(r.parts[0]!.sha256);
    expect(r.maxRssBytes).toBeLessThan(LIMIT);
    expect(readdirSync(spoolDir)).toEqual([]);
  });

  it('walks a 100 MB base64 attachment under 150 MB peak RSS and removes its spool file', async () => {
    const r = await runChild('attachment', spoolDir);
    expect(r.messageSize).toBeGreaterThan(HUNDRED_MB * 1.3);
    expect(r.parts.map((p) => p.path)).toEqual(['1', '2']);
    expect(r.parts[1]!.size).toBeGreaterThanOrEqual(HUNDRED_MB);
    expect(r.parts[1]!.reread).toBe(r.parts[1]!.sha256);
    expect(r.maxRssBytes).toBeLessThan(LIMIT);
    expect(readdirSync(spoolDir)).toEqual([]);
  });
});
