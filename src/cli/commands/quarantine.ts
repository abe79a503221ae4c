import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../../config/schema.js';
import { describeError, SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { summary } from '../../admin/quarantine-routes.js';
import { parseSince } from '../../config/durations.js';
import type { QuarantineService } from '../../quarantine/index.js';
import { cleanText, formatLocalTime } from '../../quarantine/display.js';
import { createQuarantineService } from '../compose/quarantine.js';
import { openState } from '../compose/state.js';
import type { QuarantineItem } from '../../core/state-records.js';
import type { StatePorts } from '../../core/ports.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { checkMarkKey } from '../cluster-checks.js';
import { loadOrCreateMarkKey } from '../mark-key.js';
import { exitOnSignals } from '../signals.js';
import { sweepSpool } from '../spool-sweep.js';

const HELP = `usage: sandgate quarantine <subcommand> [--config FILE] [--set KEY=VALUE]

  list [--since 2h|7d|DATE] [--verdict V] [--sender S] [--rcpt R] [--subject S] [--limit N] [--json]
                              newest first; times in the local zone, with its offset
  show ID [--json]            headers (decoded), verdict, the first lines of the text body,
                              attachments with names, types and SHA-256
  export ID                   the original message (.eml) to stdout
  release ID [--to ADDRESS]... [--allow-hash] [--by NAME]
                              hand the message on to quarantine.release.target with its
                              original envelope (or --to) and a fresh X-Sandgate-Mark;
                              --allow-hash also allows the blocking attachments' SHA-256
  delete ID

exit codes: 0 done, 2 error (unknown id: ERR_QUARANTINE_NOT_FOUND; failed release: ERR_QUARANTINE_RELEASE)`;

const OPTIONS = {
  ...CONFIG_OPTIONS,
  json: { type: 'boolean' },
  since: { type: 'string' },
  verdict: { type: 'string' },
  sender: { type: 'string' },
  rcpt: { type: 'string' },
  subject: { type: 'string' },
  limit: { type: 'string' },
  to: { type: 'string', multiple: true },
  'allow-hash': { type: 'boolean' },
  by: { type: 'string' },
} as const;

export async function run(argv: string[], io: CliIo): Promise<number> {
  if (io.stdin === process.stdin) exitOnSignals();
  try {
    return await quarantine(argv, io);
  } catch (err) {
    writeLine(io.stderr, `sandgate quarantine: ${describeError(err)}`);
    return EXIT.error;
  }
}

/** The stores the quarantine tools need, without the scanners (a CLI listing must not need clamd). */
export interface QuarantineContext {
  readonly state: StatePorts;
  readonly service: QuarantineService;
  close(): Promise<void>;
}

export async function openQuarantine(config: Config, log: Logger): Promise<QuarantineContext> {
  const state = await openState(config);
  try {
    await state.quarantine.recover();
    // show and release walk the message and may spool its parts.
    sweepSpool(config.stateDir, log);
    const markKeyPath = config.headers.markKeyFile ?? join(config.stateDir, 'mark.key');
    const markKey = loadOrCreateMarkKey(markKeyPath);
    await checkMarkKey(state.cluster, markKey, { config, keyPath: markKeyPath, log });
    const service = createQuarantineService({
      config,
      state,
      markKey,
      log,
      spoolDir: join(config.stateDir, 'spool'),
    });
    return { state, service, close: () => state.close() };
  } catch (err) {
    await state.close();
    throw err;
  }
}

async function quarantine(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs('quarantine', argv, OPTIONS);
  const [sub, id, ...extra] = positionals;
  if (values.help || sub === undefined || sub === 'help') {
    writeLine(sub === undefined && !values.help ? io.stderr : io.stdout, HELP);
    return sub === undefined && !values.help ? EXIT.error : EXIT.ok;
  }
  const needsId = sub !== 'list';
  if (!['list', 'show', 'export', 'release', 'delete'].includes(sub)) {
    writeLine(io.stderr, `sandgate quarantine: unknown subcommand "${sub}"\n\n${HELP}`);
    return EXIT.error;
  }
  if ((needsId && id === undefined) || extra.length > 0 || (!needsId && id !== undefined)) {
    writeLine(
      io.stderr,
      `sandgate quarantine ${sub}: ${needsId ? 'expected one ID' : 'takes no ID'}\n\n${HELP}`,
    );
    return EXIT.error;
  }
  const config = loadConfigFromArgs(values, io).config;
  const level = ['trace', 'debug', 'info'].includes(config.log.level) ? 'warn' : config.log.level;
  const log = createLogger({ log: { ...config.log, level } }, 'stderr');
  const ctx = await openQuarantine(config, log);
  try {
    const service = ctx.service;
    switch (sub) {
      case 'list': {
        const items = await service.list({
          ...(values.since !== undefined ? { since: parseSince(values.since, Date.now(), '--since') } : {}),
          ...(values.verdict !== undefined ? { verdict: values.verdict } : {}),
          ...(values.sender !== undefined ? { sender: values.sender } : {}),
          ...(values.rcpt !== undefined ? { recipient: values.rcpt } : {}),
          ...(values.subject !== undefined ? { subject: values.subject } : {}),
          ...(values.limit !== undefined ? { limit: positiveInt(values.limit, '--limit') } : {}),
        });
        if (values.json) writeLine(io.stdout, JSON.stringify(items.map(summary), null, 2));
        else writeLine(io.stdout, listTable(items));
        return EXIT.ok;
      }
      case 'show': {
        const details = await service.show(id!);
        if (values.json) {
          writeLine(io.stdout, JSON.stringify(details, null, 2));
          return EXIT.ok;
        }
        writeLine(io.stdout, showText(details));
        return EXIT.ok;
      }
      case 'export':
        await pipeline(await service.export(id!), io.stdout, { end: false });
        return EXIT.ok;
      case 'release': {
        const by = `cli:${values.by ?? io.env.SUDO_USER ?? io.env.USER ?? 'unknown'}`;
        const result = await service.release(id!, {
          by,
          ...(values.to !== undefined ? { to: values.to } : {}),
          allowHash: values['allow-hash'] === true,
        });
        if (values.json) writeLine(io.stdout, JSON.stringify(result, null, 2));
        else {
          writeLine(
            io.stdout,
            `released ${result.id} to ${result.delivery.to}: accepted ${result.delivery.accepted.join(', ') || '-'}` +
              (result.delivery.rejected.length ? `; refused ${result.delivery.rejected.join(', ')}` : '') +
              (result.allowed.length ? `; allowed ${result.allowed.join(', ')}` : ''),
          );
        }
        return EXIT.ok;
      }
      case 'delete':
        await service.delete(id!, `cli:${values.by ?? io.env.SUDO_USER ?? io.env.USER ?? 'unknown'}`);
        writeLine(io.stdout, `deleted ${id!}`);
        return EXIT.ok;
    }
    return EXIT.error;
  } finally {
    await ctx.close();
    log.flush?.();
  }
}

function positiveInt(v: string, name: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1)
    throw new SandgateError('ERR_CONFIG_INVALID', `${name}: not a positive integer: "${v}"`);
  return Number(v);
}

function listTable(items: readonly QuarantineItem[]): string {
  const rows = [['ID', 'TIME', 'VERDICT', 'SENDER', 'RECIPIENTS', 'SUBJECT', 'RELEASED']];
  for (const i of items) {
    rows.push(
      [
        i.id,
        formatLocalTime(i.createdAt),
        `${i.verdict}${i.threats.length ? `(${i.threats.join(',')})` : ''}`,
        i.envelope.sender || '<>',
        i.envelope.recipients.join(','),
        clip(i.subjectText ?? '', 40),
        i.releasedAt !== undefined ? `${formatLocalTime(i.releasedAt)} by ${i.releasedBy ?? '?'}` : '',
      ].map((v) => cleanText(v)),
    );
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => [...r[c]!].length)));
  return rows
    .map((r) =>
      r
        .map((v, c) => v + ' '.repeat(widths[c]! - [...v].length))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function showText(d: Awaited<ReturnType<QuarantineService['show']>>): string {
  const i = d.item;
  const header = (name: string) => d.headers.find((h) => h.name.toLowerCase() === name)?.value;
  const from = header('from');
  const lines = [
    `id:          ${i.id}`,
    `time:        ${formatLocalTime(i.createdAt)}`,
    `front end:   ${i.envelope.frontEnd}`,
    `sender:      <${i.envelope.sender}>`,
    `recipients:  ${i.envelope.recipients.join(', ')}`,
    ...(i.envelope.clientAddress !== undefined ? [`client:      ${i.envelope.clientAddress}`] : []),
    ...(from !== undefined ? [`from:        ${from}`] : []),
    `subject:     ${i.subjectText ?? ''}`,
    `size:        ${i.size} bytes`,
    `verdict:     ${i.verdict} (${i.reason}), action ${i.action}`,
    `threats:     ${i.threats.join(', ') || '-'}`,
    ...(i.releasedAt !== undefined
      ? [`released:    ${formatLocalTime(i.releasedAt)} by ${i.releasedBy ?? '?'} to ${i.releasedTo ?? '?'}`]
      : []),
    'scanners:',
    ...(i.outcomes as Array<Record<string, unknown>>).map((o) => {
      const details = (o.details ?? {}) as Record<string, unknown>;
      const extras = Object.entries(details)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(' ');
      const threats = Array.isArray(o.threats) ? `(${(o.threats as string[]).join(',')})` : '';
      const reason = typeof o.reason === 'string' ? `(${o.reason})` : '';
      const version = typeof o.version === 'string' ? `  version=${o.version}` : '';
      return `  ${String(o.scanner)}: ${String(o.kind)}${threats}${reason}${version}${extras ? `  ${extras}` : ''}`;
    }),
    'attachments:',
    ...(d.attachments.length === 0 ? ['  (none)'] : []),
    ...d.attachments.map(
      (a) =>
        `  ${a.path}  ${a.filename ?? '-'}  ${a.contentType}  ${a.size} B  sha256=${a.sha256 || '-'}${a.blocking ? '  [blocking]' : ''}`,
    ),
    ...(d.walkProblem !== undefined ? [`  (${d.walkProblem})`] : []),
    'headers:',
    ...d.headers.map((h) => `  ${h.name}: ${clip(h.value, 200)}`),
  ].map((l) => cleanText(l));
  const preview = [
    'preview (text body, first lines):',
    ...(d.preview.text === '' ? ['  (no text)'] : d.preview.text.split('\n').map((l) => `  | ${l}`)),
    ...(d.preview.truncated ? ['  | …'] : []),
    ...(d.preview.problem !== undefined ? [`  (${cleanText(d.preview.problem)})`] : []),
  ];
  return [...lines, ...preview].join('\n');
}

function clip(s: string, n: number): string {
  const chars = [...cleanText(s)];
  return chars.length > n ? `${chars.slice(0, n - 1).join('')}…` : chars.join('');
}
