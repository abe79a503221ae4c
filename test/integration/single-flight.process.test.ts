import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { CLEAN_MAIL } from '../support/runtime.js';
import { tempDir } from '../support/tmp.js';

const WORKER = join(import.meta.dirname, '../support/single-flight-worker.ts');

function startWorker(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const queue: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  lines.on('line', (line) => {
    const w = waiters.shift();
    if (w) w(line);
    else queue.push(line);
  });
  let exited: string | undefined;
  const failures: Array<(err: Error) => void> = [];
  child.on('exit', (code, signal) => {
    exited = `worker exited (${code ?? signal}) before answering`;
    for (const fail of failures.splice(0)) fail(new Error(exited));
  });
  const next = () =>
    new Promise<string>((resolve, reject) => {
      const q = queue.shift();
      if (q !== undefined) return resolve(q);
      if (exited !== undefined) return reject(new Error(exited));
      waiters.push(resolve);
      failures.push(reject);
    });
  return { child, next };
}

describe('single-flight across processes', () => {
  it('two processes scanning the same content make one scanner call', async () => {
    const dir = tempDir();
    const countFile = join(dir, 'calls');
    writeFileSync(countFile, '');
    const messageFile = join(dir, 'mail.eml');
    writeFileSync(messageFile, CLEAN_MAIL);
    const a = startWorker([join(dir, 'state'), countFile, messageFile]);
    const b = startWorker([join(dir, 'state'), countFile, messageFile]);
    expect(await a.next()).toBe('ready');
    expect(await b.next()).toBe('ready');
    a.child.stdin.write('go\n');
    b.child.stdin.write('go\n');
    const results = [JSON.parse(await a.next()), JSON.parse(await b.next())] as Array<{
      action: string;
      cached: boolean;
    }>;
    expect(results.map((r) => r.action)).toEqual(['deliver', 'deliver']);
    expect(results.filter((r) => r.cached)).toHaveLength(1);
    const calls = readFileSync(countFile, 'utf8').trim().split('\n');
    expect(calls).toHaveLength(1);
  });
});
