import { describeError, SandgateError } from '../../core/errors.js';
import type { QueueItem } from '../../core/state-records.js';
import { openState } from '../compose/state.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';

const HELP = `usage: sandgate queue <subcommand> [--config FILE] [--set KEY=VALUE]

The relay queue (relay.mode: queue): messages accepted and not yet delivered.

  list [--json]      id, age, size, sender, recipients pending/total, attempts, next attempt, last error
  show ID [--json]   one item with the state and last reply of every recipient
  retry ID           due now, retry delay back at its start (a running relay picks it up within 5 s)
  delete ID          drop the message from the queue (it is NOT delivered; no DSN)

exit codes: 0 done, 2 error (unknown id: ERR_QUEUE_NOT_FOUND)`;

const OPTIONS = { ...CONFIG_OPTIONS, json: { type: 'boolean' } } as const;
const SUBCOMMANDS = ['list', 'show', 'retry', 'delete'];

export async function run(argv: string[], io: CliIo): Promise<number> {
  try {
    return await queue(argv, io);
  } catch (err) {
    writeLine(io.stderr, `sandgate queue: ${describeError(err)}`);
    return EXIT.error;
  }
}

async function queue(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs('queue', argv, OPTIONS);
  const [sub, id, ...extra] = positionals;
  if (values.help || sub === undefined || sub === 'help') {
    const asked = values.help === true || sub === 'help';
    writeLine(asked ? io.stdout : io.stderr, HELP);
    return asked ? EXIT.ok : EXIT.error;
  }
  if (!SUBCOMMANDS.includes(sub)) {
    writeLine(io.stderr, `sandgate queue: unknown subcommand "${sub}"\n\n${HELP}`);
    return EXIT.error;
  }
  const needsId = sub !== 'list';
  if ((needsId && id === undefined) || (!needsId && id !== undefined) || extra.length > 0) {
    writeLine(io.stderr, `sandgate queue ${sub}: ${needsId ? 'expected one ID' : 'takes no ID'}\n\n${HELP}`);
    return EXIT.error;
  }
  const config = loadConfigFromArgs(values, io).config;
  const state = await openState(config);
  try {
    const store = state.relayQueue;
    const now = Date.now();
    const need = async (x: string): Promise<QueueItem> => {
      const item = await store.get(x);
      if (item === undefined) throw new SandgateError('ERR_QUEUE_NOT_FOUND', `no queued message "${x}"`);
      return item;
    };
    switch (sub) {
      case 'list': {
        const items = await store.list();
        if (values.json)
          writeLine(
            io.stdout,
            JSON.stringify(
              items.map((i) => summary(i, now)),
              null,
              2,
            ),
          );
        else writeLine(io.stdout, table(items, now));
        return EXIT.ok;
      }
      case 'show': {
        const item = await need(id as string);
        if (values.json)
          writeLine(
            io.stdout,
            JSON.stringify(
              {
                ...summary(item, now),
                recipients: item.recipients,
                envelope: item.envelope,
                scan: item.scan,
              },
              null,
              2,
            ),
          );
        else writeLine(io.stdout, details(item, now));
        return EXIT.ok;
      }
      case 'retry': {
        await need(id as string);
        await store.retryNow(id as string, now);
        writeLine(io.stdout, `${id as string}: due now`);
        return EXIT.ok;
      }
      default: {
        await need(id as string);
        await store.remove(id as string);
        writeLine(io.stdout, `${id as string}: deleted from the queue`);
        return EXIT.ok;
      }
    }
  } finally {
    await state.close();
  }
}

function summary(i: QueueItem, now: number) {
  return {
    id: i.id,
    kind: i.kind,
    createdAt: new Date(i.createdAt).toISOString(),
    ageSeconds: Math.round((now - i.createdAt) / 1000),
    size: i.size,
    sender: i.envelope.sender,
    recipients: i.recipients.length,
    pending: i.recipients.filter((r) => r.state === 'pending').length,
    scanned: i.scan !== undefined,
    attempts: i.attempts,
    nextAttemptAt: new Date(i.nextAttemptAt).toISOString(),
    ...(i.lastError !== undefined ? { lastError: i.lastError } : {}),
  };
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

function table(items: readonly QueueItem[], now: number): string {
  if (items.length === 0) return 'queue empty';
  const rows = items.map((i) => [
    i.id,
    age(now - i.createdAt),
    String(i.size),
    i.envelope.sender === '' ? '<>' : i.envelope.sender,
    `${i.recipients.filter((r) => r.state === 'pending').length}/${i.recipients.length}`,
    String(i.attempts),
    i.nextAttemptAt <= now ? 'now' : `in ${age(i.nextAttemptAt - now)}`,
    (i.lastError ?? '').slice(0, 60),
  ]);
  const head = ['ID', 'AGE', 'SIZE', 'SENDER', 'PENDING', 'TRIES', 'NEXT', 'LAST ERROR'];
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const fmt = (r: string[]) =>
    r
      .map((v, c) => v.padEnd(widths[c] ?? 0))
      .join('  ')
      .trimEnd();
  return [fmt(head), ...rows.map(fmt), `${items.length} message(s)`].join('\n');
}

function details(i: QueueItem, now: number): string {
  const lines = [
    `id:           ${i.id}${i.kind === 'dsn' ? ' (DSN)' : ''}`,
    `accepted:     ${new Date(i.createdAt).toISOString()} (${age(now - i.createdAt)} ago)`,
    `size:         ${i.size}`,
    `sender:       ${i.envelope.sender === '' ? '<>' : i.envelope.sender}`,
    `client:       ${i.envelope.clientAddress ?? '-'}${i.envelope.heloName ? ` (${i.envelope.heloName})` : ''}`,
    `scanned:      ${i.scan ? `${i.scan.verdict} (${i.scan.reason})` : 'not yet'}`,
    `attempts:     ${i.attempts}`,
    `next attempt: ${i.nextAttemptAt <= now ? 'now' : new Date(i.nextAttemptAt).toISOString()}`,
    ...(i.lastError !== undefined ? [`last error:   ${i.lastError}`] : []),
    'recipients:',
    ...i.recipients.map((r) => `  ${r.state.padEnd(9)} ${r.address}${r.reply ? `  (${r.reply})` : ''}`),
  ];
  return lines.join('\n');
}
