/**
 * PT Sandbox economy benchmark (not a test): `npx tsx bench/pt-economy.ts`
 *
 * A generated corpus of 1,000 messages goes through the verdict core with the real PT Sandbox
 * scanner against the fake appliance, once for each granularity and prefilter setting, each on a
 * fresh state database:
 *
 *   300  one newsletter to 300 recipients: the same body with links, per-recipient header fields
 *        (To, Cc, Message-ID, Date, Received, DKIM-Signature, List-Unsubscribe)
 *   200  messages carrying one of 10 attachments (PDF, DOCX, ZIP; distinct senders and subjects)
 *   200  text-only messages without links, each different
 *   100  messages with a link each, each different (the last 30 arrive while the appliance is slow:
 *        tempfailed at their deadline, their tasks still running when the process stops)
 *   100  helper restart: a new process on the same state database gets the FILE lines the old one
 *        left unanswered again (the 30 pending ones and 70 judged ones)
 *   100  MTA retries: earlier messages again with a fresh Received line
 *
 * It counts the tasks created per group against the unique risky contents of each setting (what
 * the sandbox has to see at least once), and the getVersion calls. Prints a table and writes
 * bench/results/pt-economy.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { zipSync } from 'fflate';
import type { Runtime } from '../src/cli/runtime.js';
import { BufferMessage } from '../src/mime/spool.js';
import { startFakePtSandbox, type FakePtSandbox } from '../test/fakes/fake-pt-sandbox.js';
import { makeScanner, openTestState, testConfig, type TestState } from '../test/support/pt-sandbox.js';
import { startRuntime, LogCapture } from '../test/support/runtime.js';
import { docx } from '../test/support/specimens.js';

const ENVELOPE = { sender: 'sender@example.org', recipients: ['rcpt@example.net'], frontEnd: 'bench' };
const CRLF = '\r\n';

function mail(headers: string[], body: string): Buffer {
  return Buffer.from([...headers, '', body, ''].join(CRLF));
}

function newsletter(i: number): Buffer {
  return mail(
    [
      `Received: from mta${i % 5}.shop.example.com by mx.example.net; Fri, 4 Dec 2026 10:00:${String(i % 60).padStart(2, '0')} +0000`,
      `DKIM-Signature: v=1; a=rsa-sha256; d=shop.example.com; s=s1; b=${createHash('sha256').update(`r${i}`).digest('base64')}`,
      'From: "Example Shop" <news@shop.example.com>',
      `To: customer${i}@example.net`,
      ...(i % 4 === 0 ? [`Cc: family${i}@example.net`] : []),
      'Subject: Spring offers',
      `Date: Fri, 4 Dec 2026 10:00:${String(i % 60).padStart(2, '0')} +0000`,
      `Message-ID: <spring-${i}@shop.example.com>`,
      `List-Unsubscribe: <https://shop.example.com/u?r=${i}>`,
      'MIME-Version: 1.0',
      'Content-Type: text/html; charset=utf-8',
    ],
    '<p>Spring offers: <a href="https://shop.example.com/spring">shop now</a></p>',
  );
}

const ATTACHMENTS = Array.from({ length: 10 }, (_, k) => {
  if (k % 3 === 0)
    return {
      name: `invoice-${k}.pdf`,
      type: 'application/pdf',
      bytes: Buffer.concat([Buffer.from('%PDF-1.4\n'), randomBytes(6000)]),
    };
  if (k % 3 === 1)
    return {
      name: `offer-${k}.docx`,
      type: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
      bytes: Buffer.concat([docx(), Buffer.from(`v${k}`)]),
    };
  return {
    name: `files-${k}.zip`,
    type: 'application/zip',
    bytes: Buffer.from(zipSync({ [`f${k}.txt`]: randomBytes(3000) })),
  };
});

function withAttachment(i: number): Buffer {
  const a = ATTACHMENTS[i % 10]!;
  const b64 = a.bytes.toString('base64').replace(/.{76}/g, `$&${CRLF}`);
  return mail(
    [
      `From: partner${i}@example.org`,
      'To: accounts@example.net',
      `Subject: Documents ${i}`,
      `Message-ID: <att-${i}@example.org>`,
      'MIME-Version: 1.0',
      `Content-Type: multipart/mixed; boundary="b${i}"`,
    ],
    [
      `--b${i}`,
      'Content-Type: text/plain; charset=utf-8',
      '',
      'Please find the documents attached.',
      `--b${i}`,
      `Content-Type: ${a.type}; name="${a.name}"`,
      `Content-Disposition: attachment; filename="${a.name}"`,
      'Content-Transfer-Encoding: base64',
      '',
      b64,
      `--b${i}--`,
    ].join(CRLF),
  );
}

function textOnly(i: number): Buffer {
  return mail(
    [
      `From: colleague${i}@example.net`,
      'To: me@example.net',
      `Subject: Lunch ${i}`,
      `Message-ID: <text-${i}@example.net>`,
    ],
    `Shall we meet at noon, table ${i}? Bring the notes from yesterday.`,
  );
}

function withLink(i: number): Buffer {
  return mail(
    [
      `From: someone${i}@example.org`,
      'To: me@example.net',
      `Subject: Have a look ${i}`,
      `Message-ID: <link-${i}@example.org>`,
    ],
    `See https://docs.example.org/shared/${i}/${randomBytes(6).toString('hex')} before Friday.`,
  );
}

const groups = {
  newsletter: Array.from({ length: 300 }, (_, i) => newsletter(i)),
  attachments: Array.from({ length: 200 }, (_, i) => withAttachment(i)),
  textOnly: Array.from({ length: 200 }, (_, i) => textOnly(i)),
  links: Array.from({ length: 100 }, (_, i) => withLink(i)),
};
const earlier = [
  ...groups.newsletter,
  ...groups.attachments,
  ...groups.textOnly,
  ...groups.links.slice(0, 50),
];
const retries = Array.from({ length: 100 }, (_, i) =>
  Buffer.concat([
    Buffer.from(
      `Received: from mx${i % 3}.example.org by gw.example.net; Fri, 4 Dec 2026 11:00:00 +0000${CRLF}`,
    ),
    earlier[(i * 37) % earlier.length]!,
  ]),
);

interface Setting {
  readonly name: string;
  readonly granularity: 'message' | 'attachments';
  readonly prefilter: boolean;
  /** What the sandbox has to see at least once under this setting. */
  readonly uniqueRisky: number;
}

const SETTINGS: readonly Setting[] = [
  // Every distinct message (300 + 200 + 200 + 100): the sandbox sees whole messages.
  { name: 'message', granularity: 'message', prefilter: false, uniqueRisky: 800 },
  // Distinct messages with a risky part or a link: 300 newsletter copies + 200 attachments + 100 links.
  { name: 'message + prefilter', granularity: 'message', prefilter: true, uniqueRisky: 600 },
  // 10 attachments + 1 newsletter body + 100 distinct link bodies; text without links has nothing.
  { name: 'attachments', granularity: 'attachments', prefilter: false, uniqueRisky: 111 },
  { name: 'attachments + prefilter', granularity: 'attachments', prefilter: true, uniqueRisky: 111 },
];

let seq = 0;
async function evaluateAll(
  rt: Runtime,
  items: readonly Buffer[],
  deadlineMs: number,
  conc = 64,
): Promise<string[]> {
  const actions: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      for (;;) {
        const i = next++;
        const bytes = items[i];
        if (bytes === undefined) return;
        const r = await rt.evaluator.evaluate(new BufferMessage(`sg-eco-${seq++}`, ENVELOPE, bytes), {
          deadline: Date.now() + deadlineMs,
        });
        actions.push(r.decision.action);
      }
    }),
  );
  return actions;
}

async function runSetting(setting: Setting) {
  const sb: FakePtSandbox = await startFakePtSandbox({ taskDurationMs: 50 });
  const state: TestState = openTestState();
  const cfg = testConfig(sb.url, {
    granularity: setting.granularity,
    prefilter: { enabled: setting.prefilter },
    polling: { firstDelay: '50ms', interval: '200ms' },
  });
  const start = async () => {
    const scanner = makeScanner(cfg, state);
    return await startRuntime(state.dir, [scanner], {
      config: { scan: { chain: ['pt-sandbox'] } },
      logs: new LogCapture(),
    });
  };
  const perGroup: Record<string, number> = {};
  const count = async (group: string, fn: () => Promise<unknown>) => {
    const before = sb.tasksCreated();
    await fn();
    perGroup[group] = sb.tasksCreated() - before;
  };
  let rt = await start();
  const t0 = performance.now();
  await count('newsletter (300)', () => evaluateAll(rt, groups.newsletter, 30_000));
  await count('10 attachments (200)', () => evaluateAll(rt, groups.attachments, 30_000));
  await count('text, no links (200)', () => evaluateAll(rt, groups.textOnly, 30_000));
  await count('distinct links (70)', () => evaluateAll(rt, groups.links.slice(0, 70), 30_000));
  // The last 30 link messages arrive while the appliance is slow: answered tempfail at their
  // deadline, their tasks still running when the process stops.
  sb.setTaskDuration(60_000);
  const pending = groups.links.slice(70);
  await count('distinct links (30), pending', () => evaluateAll(rt, pending, 3_000));
  await rt.close();
  // A new process; the appliance finishes; CommuniGate re-sends the pending FILE lines.
  sb.setTaskDuration(50);
  sb.finishAll();
  rt = await start();
  // CommuniGate re-sends every request the old process left unanswered: the 30 pending ones and
  // 70 whose answers were lost with it.
  const resent = [...pending, ...groups.newsletter.slice(0, 35), ...groups.attachments.slice(0, 35)];
  await count('re-sent after restart (100)', () => evaluateAll(rt, resent, 30_000));
  await count('MTA retries (100)', () => evaluateAll(rt, retries, 30_000));
  await rt.close();
  const seconds = (performance.now() - t0) / 1000;
  const result = {
    setting: setting.name,
    tasks: sb.tasksCreated(),
    uniqueRisky: setting.uniqueRisky,
    uploads: sb.uploads.filter((u) => u.refused === undefined).length,
    getVersion: sb.counters['maintenance/getVersion'] ?? 0,
    perGroup,
    seconds: Number(seconds.toFixed(1)),
  };
  await state.close();
  await sb.close();
  return result;
}

const results = [];
for (const s of SETTINGS) results.push(await runSetting(s));

console.log('PT Sandbox economy: 1,000 messages (npx tsx bench/pt-economy.ts)');
const groupNames = Object.keys(results[0]!.perGroup);
const header = ['setting', 'tasks', 'unique risky', ...groupNames, 'getVersion'];
const rows = results.map((r) => [
  r.setting,
  String(r.tasks),
  String(r.uniqueRisky),
  ...groupNames.map((g) => String(r.perGroup[g] ?? 0)),
  String(r.getVersion),
]);
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
for (const row of [header, ...rows])
  console.log(`| ${row.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/pt-economy.json', import.meta.url),
  `${JSON.stringify({ date: new Date().toISOString(), node: process.version, results }, null, 2)}\n`,
);
