import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { relaySchema } from '../../src/config/relay.js';
import type { RelayServer } from '../../src/smtp/server.js';
import { buildRelay } from '../../src/cli/compose/relay.js';
import { startSmtpSink, type SmtpSink } from '../fakes/smtp-sink.js';
import { tempDir } from '../support/tmp.js';
import { blockedMail, ENVELOPE, startHarness, type Harness } from './quarantine-harness.js';

let harness: Harness | undefined;
let sink: SmtpSink | undefined;
let relay: RelayServer | undefined;
afterEach(async () => {
  await relay?.close();
  await harness?.close();
  await sink?.close();
  relay = harness = sink = undefined;
});

describe('quarantine round trip through the SMTP relay', () => {
  it('refused at the relay -> listed -> released back through the relay -> at the next hop once, not scanned again', async () => {
    sink = await startSmtpSink();
    const dir = tempDir();
    harness = await startHarness(dir);
    relay = buildRelay({
      relay: relaySchema.parse({ listen: '127.0.0.1:0' }),
      nextHop: { kind: 'smtp', host: '127.0.0.1', port: sink.port },
      evaluator: harness.runtime.evaluator,
      log: harness.runtime.log,
      spoolDir: join(dir, 'spool', 'relay'),
      maxMessageSize: 10 * 1024 * 1024,
      memorySpoolThreshold: 64 * 1024,
    }).server;
    const { port } = await relay.listen('127.0.0.1', 0);

    const client = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
    const refused = await client
      .sendMail({
        envelope: { from: ENVELOPE.sender, to: [...ENVELOPE.recipients] },
        raw: blockedMail({ received: true }),
      })
      .catch((e: unknown) => e as { responseCode?: number });
    client.close();
    expect((refused as { responseCode?: number }).responseCode).toBe(550);
    expect(sink.messages).toHaveLength(0);
    expect(harness.rules.calls).toBe(1);

    const [item] = await harness.service.list({ sender: ENVELOPE.sender });
    expect(item).toBeDefined();
    expect(item!.envelope.recipients).toEqual(ENVELOPE.recipients);

    // The release target is the relay itself (the operator points it at the MTA that feeds the relay).
    const { QuarantineService } = await import('../../src/quarantine/service.js');
    const { buildDelivery } = await import('../../src/cli/compose/delivery.js');
    const service = new QuarantineService({
      store: harness.runtime.quarantine,
      allowList: harness.allowList,
      markKey: harness.runtime.markKey,
      delivery: buildDelivery(
        { kind: 'smtp', host: '127.0.0.1', port },
        { tls: 'none', timeout: 5000 },
        { hostname: 'release.test', key: 'quarantine.release', log: harness.runtime.log },
      ),
      walk: {
        spoolDir: join(dir, 'spool', 'q'),
        limits: harness.runtime.config.scanners.rules.limits,
        memoryThreshold: 1 << 20,
      },
      log: harness.runtime.log,
    });
    await service.release(item!.id, { by: 'test' });
    const [delivered] = await sink.waitFor(1);
    expect(sink.messages).toHaveLength(1);
    expect(delivered!.sender).toBe(ENVELOPE.sender);
    expect(delivered!.recipients).toEqual(ENVELOPE.recipients);
    expect(harness.rules.calls).toBe(1);
    const verdicts = harness.logs.events('message.verdict');
    expect(verdicts.map((v) => v.reason)).toEqual(['malicious', 'released']);
    // The original content arrives.
    expect(delivered!.bytes.toString('latin1')).toContain(
      'Content-Disposition: attachment; filename="tool.exe"',
    );
  });
});
