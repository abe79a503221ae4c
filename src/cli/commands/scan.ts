import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { describeError, isSandgateError, SandgateError } from '../../core/errors.js';
import type { Evaluation } from '../../core/evaluation.js';
import { newMsgId } from '../../core/ids.js';
import type { Envelope, MessageSource } from '../../core/message.js';
import type { MarkCheck } from '../../core/mark.js';
import { describeFinding } from '../../core/outcome.js';
import { FileMessage, Spool } from '../../mime/spool.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { createRuntime } from '../runtime.js';
import { exitOnSignals } from '../signals.js';

const HELP = `usage: sandgate scan [--config FILE] [--set KEY=VALUE] [--json] FILE.eml | -

Scans one message with the configured scanner chain and prints the verdict.
Nothing is quarantined or delivered: this command only reports.

A message that carries an X-Sandgate-Mark gets a "mark" line: valid (judged by this installation
before, not scanned again) or invalid and why (scanned as usual).

A message larger than scan.maxMessageSize is not scanned: exit 2, ERR_MESSAGE_TOO_LARGE (stdin is
read up to the limit and no further).

exit codes: 0 clean, 1 malicious or suspicious, 2 error (unreadable file, bad config, too large,
a scanner failed)`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  // A signal ends the process through process.exit(), so that the spool file of stdin goes too.
  if (io.stdin === process.stdin) exitOnSignals();
  try {
    return await scan(argv, io);
  } catch (err) {
    writeLine(io.stderr, `sandgate scan: ${describeError(err)}`);
    return EXIT.error;
  }
}

async function scan(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs('scan', argv, {
    ...CONFIG_OPTIONS,
    json: { type: 'boolean' },
  });
  if (values.help) {
    writeLine(io.stdout, HELP);
    return EXIT.ok;
  }
  if (positionals.length !== 1) {
    writeLine(io.stderr, `sandgate scan: expected one message file (or -)\n\n${HELP}`);
    return EXIT.error;
  }
  const input = positionals[0] as string;
  const path = input === '-' ? undefined : resolve(io.cwd, input);
  const fileSize = path === undefined ? undefined : regularFileSize(input, path);

  const { config } = loadConfigFromArgs(values, io);
  const maxSize = config.scan.maxMessageSize;
  if (fileSize !== undefined && fileSize > maxSize) {
    // The one rule for too-large (docs/configuration.md): not read, not scanned, exit 2.
    throw new SandgateError(
      'ERR_MESSAGE_TOO_LARGE',
      `${input} is larger than scan.maxMessageSize (${fileSize} > ${maxSize} bytes); not scanned`,
      { details: { path, bytes: fileSize, maxMessageSize: maxSize } },
    );
  }
  const log = createLogger(
    config.log.file !== undefined ? config : { log: { ...config.log, level: 'warn' } },
    'stderr',
  );
  const runtime = await createRuntime(config, { log, frontEnd: 'cli', reportOnly: true, reportMarks: true });
  const envelope: Envelope = { sender: '', recipients: [], frontEnd: 'cli' };
  const msgId = newMsgId();
  let message: MessageSource;
  let spool: Spool | undefined;
  try {
    if (path !== undefined) {
      message = new FileMessage(msgId, envelope, path, 0, fileSize);
    } else {
      spool = await readStdin(io, {
        msgId,
        envelope,
        dir: runtime.spoolDir,
        memoryThreshold: config.scan.memorySpoolThreshold,
        maxBytes: maxSize,
        overflow: 'fail',
      });
      message = spool;
    }
    const progress = startProgress(io);
    let evaluation: Evaluation;
    try {
      evaluation = await runtime.evaluator.evaluate(message, {
        deadline: Date.now() + config.scan.deadline,
        onProgress: progress.update,
      });
    } finally {
      progress.stop();
    }
    if (values.json) {
      writeLine(io.stdout, JSON.stringify({ file: input, ...evaluation }, null, 2));
    } else {
      printTable(io, input, evaluation);
    }
    return exitCodeFor(evaluation);
  } finally {
    spool?.dispose();
    await runtime.close();
    log.flush();
  }
}

/** The size of the message file, which must be a regular file (ERR_INPUT_NOT_FOUND otherwise). */
function regularFileSize(input: string, path: string): number {
  let stat;
  try {
    stat = statSync(path);
  } catch (cause) {
    throw new SandgateError(
      'ERR_INPUT_NOT_FOUND',
      `cannot read ${input}: ${(cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(cause)}`,
      { cause, details: { path } },
    );
  }
  if (!stat.isFile()) {
    throw new SandgateError('ERR_INPUT_NOT_FOUND', `cannot read ${input}: not a regular file`, {
      details: { path },
    });
  }
  return stat.size;
}

/** Spools stdin, stopping at scan.maxMessageSize (stdin may never end: `cat /dev/zero | sandgate scan -`). */
async function readStdin(io: CliIo, options: Parameters<typeof Spool.fromStream>[1]): Promise<Spool> {
  try {
    return await Spool.fromStream(io.stdin, options);
  } catch (err) {
    if (!isSandgateError(err, 'ERR_MESSAGE_TOO_LARGE')) throw err;
    throw new SandgateError(
      'ERR_MESSAGE_TOO_LARGE',
      `stdin is larger than scan.maxMessageSize (${options.maxBytes} bytes); stopped reading, not scanned`,
      { cause: err, details: { maxMessageSize: options.maxBytes } },
    );
  }
}

export function exitCodeFor(evaluation: Evaluation): number {
  const { verdict } = evaluation.decision;
  if (verdict === 'malicious' || verdict === 'suspicious') return EXIT.found;
  if (evaluation.outcomes.some((o) => o.kind === 'failed')) return EXIT.error;
  return EXIT.ok;
}

function printTable(io: CliIo, input: string, e: Evaluation): void {
  const rows: Array<[string, string]> = [
    ['file', input],
    ['verdict', e.decision.verdict],
    ['action', `${e.decision.action} (policy: ${e.decision.reason})`],
  ];
  if (e.decision.threats.length > 0) rows.push(['threats', e.decision.threats.join(', ')]);
  for (const m of e.marks ?? []) rows.push(['mark', describeMark(m)]);
  rows.push(['msgId', e.msgId], ['time', `${e.ms} ms`]);
  for (const [k, v] of rows) writeLine(io.stdout, `${k.padEnd(9)}${v}`);
  writeLine(io.stdout, '');
  const header: [string, string, string, string] = ['scanner', 'outcome', 'ms', 'cached'];
  const body = e.outcomes.map((o): [string, string, string, string] => [
    o.scanner,
    describeFinding(o) + (o.kind === 'failed' ? `: ${o.message}` : ''),
    String(o.ms),
    o.cached ? 'yes' : 'no',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]?.length ?? 0)));
  for (const row of [header, ...body]) {
    writeLine(
      io.stdout,
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    );
  }
}

/** An inbound X-Sandgate-Mark's check, for the report (instead of a warning on stderr). */
function describeMark(m: MarkCheck): string {
  if (m.ok) {
    return `valid (${m.claims.kind}, ${m.claims.msgId}, ${new Date(m.claims.at * 1000).toISOString()}): judged here before, not scanned again`;
  }
  switch (m.reason) {
    case 'mac':
      return "invalid (mac): made with another installation's key (headers.markKeyFile), or the message changed after it was marked (a directory next hop's envelope lines are a change); scanned as usual";
    case 'expired':
      return 'invalid (expired): older than headers.markMaxAge; scanned as usual';
    case 'future':
      return 'invalid (future): dated ahead of this clock; scanned as usual';
    case 'syntax':
      return 'invalid (syntax): not a mark sandgate wrote; scanned as usual';
  }
}

/** On a terminal, a scan slower than a second shows elapsed time and the scanner it waits for. */
function startProgress(io: CliIo): {
  update: (e: { scanner: string; phase: 'start' | 'done' }) => void;
  stop: () => void;
} {
  const started = Date.now();
  let pending = '';
  let shown = false;
  const timer = io.stderr.isTTY
    ? setInterval(() => {
        const elapsed = (Date.now() - started) / 1000;
        if (elapsed < 1) return;
        shown = true;
        io.stderr.write(
          `\rscanning… ${elapsed.toFixed(1)} s${pending ? ` (waiting for ${pending})` : ''}\x1b[K`,
        );
      }, 250)
    : undefined;
  return {
    update: (e) => {
      pending = e.phase === 'start' ? e.scanner : '';
    },
    stop: () => {
      if (timer) clearInterval(timer);
      if (shown) io.stderr.write('\r\x1b[K');
    },
  };
}
