import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');
const DIST = join(ROOT, 'dist');

/**
 * Imports the modules named on its command line in a fresh node and prints every file loaded from
 * node_modules (a module.register load hook sees ES modules and CommonJS alike).
 */
const PROBE = `
import { register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const { port1, port2 } = new MessageChannel();
const urls = [];
port1.on('message', (u) => urls.push(u));
const hooks = 'let port; export function initialize(d) { port = d.port; } ' +
  'export async function load(url, context, next) { port.postMessage(url); return next(url, context); }';
register('data:text/javascript,' + encodeURIComponent(hooks), import.meta.url, { data: { port: port2 }, transferList: [port2] });
for (const m of process.argv.slice(1)) await import(m);
await new Promise((r) => setTimeout(r, 100));
port1.close();
console.log(JSON.stringify([...new Set(urls.filter((u) => u.includes('/node_modules/')).map((u) => u.split('/node_modules/').pop()))]));
`;

function loadedFrom(modules: readonly string[]): string[] {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', PROBE, ...modules], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

describe('modules a front end loads at start', () => {
  it('the relay and the helper load neither undici (PT Sandbox client), the nodemailer transport (release) nor mailparser (previews) until used', () => {
    const commands = [join(DIST, 'cli/commands/relay.js'), join(DIST, 'cli/commands/helper.js')];
    const atStart = loadedFrom(commands);
    // The probe sees what the commands do load.
    expect(atStart.some((f) => f.startsWith('smtp-server/'))).toBe(true);
    expect(atStart.filter((f) => f.startsWith('undici/'))).toEqual([]);
    expect(atStart).not.toContain('nodemailer/dist/esm/nodemailer.js');
    expect(atStart.filter((f) => f.startsWith('mailparser/'))).toEqual([]);
    // And it would see these two if they were imported.
    const withBoth = loadedFrom([...commands, 'undici', 'nodemailer']);
    expect(withBoth).toContain('undici/index.js');
    expect(withBoth).toContain('nodemailer/dist/esm/nodemailer.js');
  });

  it('the milter loads no SMTP library (smtp-server, nodemailer) and no undici at start', () => {
    const atStart = loadedFrom([join(DIST, 'cli/commands/milter.js')]);
    expect(atStart.some((f) => f.startsWith('prom-client/'))).toBe(true);
    expect(atStart.filter((f) => f.startsWith('smtp-server/') || f.startsWith('nodemailer/'))).toEqual([]);
    expect(atStart.filter((f) => f.startsWith('undici/'))).toEqual([]);
  });
});
