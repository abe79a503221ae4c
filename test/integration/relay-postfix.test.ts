import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cli/load-config.js';
import { createRuntime, type Runtime } from '../../src/cli/runtime.js';
import { silentLogger } from '../../src/core/logger.js';
import type { MessageSummary, RelayServer } from '../../src/smtp/server.js';
import { buildRelay } from '../../src/cli/compose/relay.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { postfixAvailable, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { EICAR } from '../support/relay.js';

/**
 * The after-queue content_filter contract with a real Postfix (environment.md 2.1):
 * client -> Postfix smtpd -> scan transport -> sandgate relay (rules scanner) -> Postfix
 * re-injection smtpd -> relayhost (the sink).
 */
describe.runIf(postfixAvailable())('relay as Postfix content_filter (real Postfix)', () => {
  let sink: SmtpSink;
  let postfix: PostfixInstance;
  let relay: RelayServer;
  let runtime: Runtime;
  let state: string;
  const summaries: MessageSummary[] = [];

  beforeAll(async () => {
    state = mkdtempSync(join(tmpdir(), 'sg-relay-postfix-'));
    sink = await startSmtpSink();
    const { config } = loadConfig({ env: {}, cwd: state, sets: [`stateDir=${state}`, 'scan.chain=rules'] });
    runtime = await createRuntime(config, { log: silentLogger, frontEnd: 'relay' });
    // The relay listens first (port 0); Postfix is then configured with its port and gives us the re-injection port.
    let hop = { kind: 'smtp' as const, host: '127.0.0.1', port: 1 };
    const make = () =>
      buildRelay({
        relay: { ...config.relay, listen: { host: '127.0.0.1', port: 0 } },
        nextHop: hop,
        evaluator: runtime.evaluator,
        log: silentLogger,
        spoolDir: runtime.spoolDir,
        maxMessageSize: config.scan.maxMessageSize,
        memorySpoolThreshold: config.scan.memorySpoolThreshold,
      }).server;
    const probe = make();
    const { port: filterPort } = await probe.listen('127.0.0.1', 0);
    await probe.close();
    postfix = await startPostfix({ filterPort, relayhostPort: sink.port });
    hop = { kind: 'smtp', host: '127.0.0.1', port: postfix.reinjectPort };
    relay = make();
    relay.on('message', (m) => summaries.push(m));
    await relay.listen('127.0.0.1', filterPort);
  });

  afterAll(async () => {
    await relay?.close();
    await postfix?.stop();
    await sink?.close();
    await runtime?.close();
    rmSync(state, { recursive: true, force: true });
  });

  it('delivers clean mail through the relay and Postfix re-injection, and keeps EICAR out', async () => {
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: postfix.inPort,
      secure: false,
      ignoreTLS: true,
      name: 'client.test.local',
    });
    try {
      const clean = await t.sendMail({
        envelope: { from: 'a@test.local', to: ['b@example.test'] },
        raw: 'From: a@test.local\r\nTo: b@example.test\r\nSubject: clean via postfix\r\nMessage-ID: <clean-1@test.local>\r\n\r\nhello\r\n',
      });
      expect(clean.response).toMatch(/^250 /);
      const virus = await t.sendMail({
        envelope: { from: 'a@test.local', to: ['b@example.test'] },
        raw: `From: a@test.local\r\nTo: b@example.test\r\nSubject: eicar via postfix\r\nMessage-ID: <eicar-1@test.local>\r\n\r\n${EICAR}\r\n`,
      });
      // Postfix accepted it into its queue; the filter refuses it later, so Postfix bounces it.
      expect(virus.response).toMatch(/^250 /);
    } finally {
      t.close();
    }
    // Postfix delivers from its queue in no fixed order: wait for the clean message and the bounce.
    await until(() => summaries.some((s) => s.action === 'reject'));
    const all = (await sink.waitFor(2)).map((m) => m.bytes.toString());
    const text =
      all.find((m) => m.includes('Subject: clean via postfix') && !/Undelivered Mail/.test(m)) ?? '';
    expect(text).toContain('Subject: clean via postfix');
    expect(text).toMatch(/^X-Sandgate-Verdict: clean/m);
    // Re-injected by Postfix, which wrote the original client into its Received field thanks to XFORWARD.
    expect(text).toMatch(/Received: from client\.test\.local/);
    expect(
      all.filter(
        (m) =>
          m.includes('Subject: eicar via postfix') && !/Content-Description: Undelivered Message/.test(m),
      ),
    ).toHaveLength(0);
    expect(all.some((m) => /Undelivered Mail Returned to Sender/.test(m) && /5\.7\.1/.test(m))).toBe(true);
    expect(summaries.find((s) => s.action === 'reject')).toMatchObject({ code: 550 });
  });
});

async function until(f: () => boolean): Promise<void> {
  while (!f()) await new Promise((r) => setImmediate(r));
}
