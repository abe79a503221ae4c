/**
 * An operator's path through the built `sandgate relay` process: EICAR is refused with 550, its copy
 * shows up in the quarantine API on the relay's own admin port (token required), and /metrics counts it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, expect, it } from 'vitest';
import { startSmtpSink } from '../fakes/smtp-sink.js';
import { startRelayProcess } from '../support/relay-process.js';
import { EICAR } from '../support/relay.js';
import { tempDir } from '../support/tmp.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('refuses EICAR, keeps it in the quarantine, and shows it on the relay admin port', async () => {
  const dir = tempDir();
  const sink = await startSmtpSink();
  cleanups.push(() => sink.close());
  const token = 'operator-token-0123456789';
  writeFileSync(join(dir, 'admin.token'), `${token}\n`);
  const configFile = join(dir, 'sandgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      stateDir: join(dir, 'state'),
      relay: { listen: '127.0.0.1:0', nextHop: `smtp://127.0.0.1:${sink.port}` },
      admin: { enabled: true, listen: '127.0.0.1:0', tokenFile: join(dir, 'admin.token') },
    }),
  );
  const relay = await startRelayProcess(configFile, true);
  cleanups.push(() => relay.stop());
  const ports = { relay: relay.relayPort, admin: relay.adminPort };

  const t = nodemailer.createTransport({
    host: '127.0.0.1',
    port: ports.relay,
    secure: false,
    ignoreTLS: true,
  });
  const refused = await t
    .sendMail({
      envelope: { from: 'a@example.test', to: ['b@example.test'] },
      raw: `From: a@example.test\r\nTo: b@example.test\r\nSubject: eicar for the operator\r\n\r\n${EICAR}\r\n`,
    })
    .then(
      () => 0,
      (err: { responseCode?: number }) => err.responseCode ?? -1,
    );
  t.close();
  expect(refused).toBe(550);
  expect(sink.messages).toHaveLength(0);

  const api = `http://127.0.0.1:${ports.admin}/api/quarantine`;
  expect((await fetch(api)).status).toBe(401);
  const listed = (await (await fetch(api, { headers: { authorization: `Bearer ${token}` } })).json()) as {
    items: Array<{ subject?: string; sender: string }>;
  };
  expect(listed.items).toHaveLength(1);
  expect(listed.items[0]).toMatchObject({ subject: 'eicar for the operator', sender: 'a@example.test' });

  const metrics = await (await fetch(`http://127.0.0.1:${ports.admin}/metrics`)).text();
  expect(metrics).toMatch(
    /sandgate_messages_total\{front_end="relay",action="reject",reason="malicious"\} 1/,
  );
});
