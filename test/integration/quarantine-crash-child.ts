// Writes quarantine items in a loop until killed (test/integration/quarantine-crash.test.ts).
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Decision } from '../../src/core/policy.js';
import { BufferMessage } from '../../src/mime/spool.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';

const stateDir = process.argv[2]!;
const store = openSqliteState(stateDir, { quarantineDir: join(stateDir, 'quarantine') }).quarantine;
const decision: Decision = {
  action: 'reject',
  keepCopy: true,
  verdict: 'malicious',
  reason: 'malicious',
  threats: ['Test.Threat'],
  failOpen: false,
};
let n = 0;
for (;;) {
  const size = 1000 + Math.floor(Math.random() * 300_000);
  const body = randomBytes(size).toString('base64');
  const msg = new BufferMessage(
    `crash${process.pid}x${n}`,
    { sender: 's@example.org', recipients: ['r@example.net'], frontEnd: 'test' },
    Buffer.from(`Subject: crash ${n}\r\n\r\n${body}\r\n`),
  );
  await store.put({ message: msg, contentKey: randomBytes(32).toString('hex'), decision, outcomes: [] });
  n++;
  process.stdout.write(`wrote ${n}\n`);
}
