/**
 * The built `sandgate relay` process and its spool files (issue 14, item 3): a message too big for
 * the memory spool goes to `<stateDir>/spool`; kill -9 mid-transaction leaves it there, and the
 * next start removes it; a live relay's file survives another process's start; SIGTERM removes it.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { SANDGATE_BIN } from '../support/cli.js';
import { startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { SmtpTalk } from '../support/smtp-talk.js';
import { tempDir } from '../support/tmp.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function spoolFiles(state: string): string[] {
  const dir = join(state, 'spool');
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => e.name);
}

async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const limit = Date.now() + ms;
  while (!done()) {
    if (Date.now() > limit) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function setup(): Promise<{ dir: string; state: string; configFile: string; sink: SmtpSink }> {
  const dir = tempDir();
  const sink = await startSmtpSink();
  cleanups.push(() => sink.close());
  const state = join(dir, 'state');
  const configFile = join(dir, 'sandgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      stateDir: state,
      scan: { memorySpoolThreshold: '1k' },
      relay: { listen: '127.0.0.1:0', nextHop: `smtp://127.0.0.1:${sink.port}`, shutdownTimeout: '1s' },
    }),
  );
  return { dir, state, configFile, sink };
}

async function start(configFile: string): Promise<RelayProcess> {
  const relay = await startRelayProcess(configFile);
  cleanups.push(() => {
    if (relay.child.exitCode === null && relay.child.signalCode === null) relay.child.kill('SIGKILL');
  });
  return relay;
}

/** Opens a transaction and sends 2 MB of a message without its final dot: the relay spools it to a file. */
async function midTransaction(relay: RelayProcess, state: string): Promise<SmtpTalk> {
  const talk = await SmtpTalk.open(relay.relayPort);
  cleanups.push(() => talk.end());
  expect((await talk.read()).code).toBe(220);
  expect((await talk.cmd('EHLO client.example.test')).code).toBe(250);
  expect((await talk.cmd('MAIL FROM:<a@example.test>')).code).toBe(250);
  expect((await talk.cmd('RCPT TO:<b@example.test>')).code).toBe(250);
  expect((await talk.cmd('DATA')).code).toBe(354);
  const line = `${'x'.repeat(76)}\r\n`;
  talk.send(`From: a@example.test\r\nTo: b@example.test\r\nSubject: big\r\n\r\n${line.repeat(26_000)}`);
  await until(() => spoolFiles(state).length > 0, 'the spool file');
  return talk;
}

function exited(relay: RelayProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (relay.child.exitCode !== null || relay.child.signalCode !== null) {
      resolve({ code: relay.child.exitCode, signal: relay.child.signalCode });
      return;
    }
    relay.child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

describe('sandgate relay: spool files', () => {
  it('kill -9 mid-transaction, then an immediate restart on the same stateDir: no spool file left', async () => {
    const { state, configFile } = await setup();
    const first = await start(configFile);
    await midTransaction(first, state);
    first.child.kill('SIGKILL');
    expect(await exited(first)).toEqual({ code: null, signal: 'SIGKILL' });
    const left = spoolFiles(state);
    expect(left).toHaveLength(1); // what kill -9 leaves behind
    const second = await start(configFile);
    expect(spoolFiles(state)).toEqual([]);
    expect(second.records.find((r) => r.event === 'spool.swept')).toMatchObject({ removed: 1 });
    await second.stop();
  });

  it("another process's start leaves a live relay's spool file alone; the message then goes through", async () => {
    const { dir, state, configFile, sink } = await setup();
    const relay = await start(configFile);
    const talk = await midTransaction(relay, state);
    const [file] = spoolFiles(state);
    // sandgate scan sweeps the same stateDir at its start.
    writeFileSync(join(dir, 'm.eml'), 'Subject: hi\r\n\r\nhello\r\n');
    const code = await new Promise<number | null>((resolve) => {
      spawn(process.execPath, [SANDGATE_BIN, 'scan', '--config', configFile, 'm.eml'], {
        cwd: dir,
        stdio: 'ignore',
      }).once('exit', resolve);
    });
    expect(code).toBe(0);
    expect(spoolFiles(state)).toEqual([file]);
    talk.send('\r\n.\r\n');
    expect((await talk.read()).code).toBe(250);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]?.bytes.length).toBeGreaterThan(2_000_000);
    expect(spoolFiles(state)).toEqual([]);
    await relay.stop();
  });

  it('SIGTERM mid-transaction: the relay stops within relay.shutdownTimeout and leaves no spool file', async () => {
    const { state, configFile } = await setup();
    const relay = await start(configFile);
    await midTransaction(relay, state);
    relay.child.kill('SIGTERM');
    expect(await exited(relay)).toEqual({ code: 0, signal: null });
    expect(spoolFiles(state)).toEqual([]);
  });
});
