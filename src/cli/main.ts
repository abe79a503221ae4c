#!/usr/bin/env -S node --max-semi-space-size=4
import { realpathSync } from 'node:fs';
import { packageVersion } from './version.js';
import { fileURLToPath } from 'node:url';
import type { CliIo } from './io.js';
import { EXIT, writeLine } from './io.js';

type Command = (argv: string[], io: CliIo) => Promise<number>;

/** Commands load lazily: `sandgate helper` starts without loading the SMTP stack, and vice versa. */
const COMMANDS: Readonly<Record<string, { summary: string; load: () => Promise<{ run: Command }> }>> = {
  scan: {
    summary: 'scan one message file (or - for stdin) and print the verdict',
    load: () => import('./commands/scan.js'),
  },
  'check-config': {
    summary: 'validate the configuration and print it with secrets redacted',
    load: () => import('./commands/check-config.js'),
  },
  helper: {
    summary: 'run as a CommuniGate Pro content filtering helper (stdin/stdout)',
    load: () => import('./commands/helper.js'),
  },
  sandbox: {
    summary: 'sandbox health: check the PT Sandbox address, certificate and token; --watch: its load',
    load: () => import('./commands/sandbox.js'),
  },
  icap: {
    summary: 'icap health: check the ICAP servers (OPTIONS, and EICAR probes that must come back infected)',
    load: () => import('./commands/icap.js'),
  },
  relay: {
    summary: 'run the inline SMTP relay (content filter) in front of the next hop',
    load: () => import('./commands/relay.js'),
  },
  milter: {
    summary: 'run the milter front end for Postfix (smtpd_milters), blocking before the queue',
    load: () => import('./commands/milter.js'),
  },
  quarantine: {
    summary: 'list, show, export, release or delete quarantined mail',
    load: () => import('./commands/quarantine.js'),
  },
  queue: {
    summary: 'list, show, retry or delete messages in the relay queue (relay.mode: queue)',
    load: () => import('./commands/queue.js'),
  },
  state: {
    summary: "the shared state: migrate, status, import a single host's SQLite state into PostgreSQL",
    load: () => import('./commands/state.js'),
  },
  admin: {
    summary: 'run the admin HTTP server (quarantine API and page) for helper-only sites',
    load: () => import('./commands/admin.js'),
  },
};

export const USAGE = `usage: sandgate <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(14)}${c.summary}`)
  .join('\n')}

common options:
  --config FILE   YAML configuration (or SANDGATE_CONFIG)
  --set KEY=VALUE override one key, e.g. --set scan.chain=rules,clamd
  --help          this text (sandgate <command> --help: the command's own)
  --version       print sandgate's version`;

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    writeLine(name === undefined ? io.stderr : io.stdout, USAGE);
    return name === undefined ? EXIT.error : EXIT.ok;
  }
  if (name === '--version' || name === 'version') {
    writeLine(io.stdout, packageVersion());
    return EXIT.ok;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    writeLine(io.stderr, `sandgate: unknown command "${name}"\n\n${USAGE}`);
    return EXIT.error;
  }
  const { run } = await command.load();
  return run(rest, io);
}

function invokedDirectly(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

/**
 * The reader of our output went away (`sandgate scan FILE | head -1`): what is left to print has
 * no reader, which is not an error of the command. Without a listener the EPIPE is an unhandled
 * 'error' event: a stack trace and exit 1 instead of the verdict's exit code. The command finishes
 * and exits with its own code; any other error on the stream is thrown as before.
 */
function quietOnEpipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

if (invokedDirectly()) {
  quietOnEpipe(process.stdout);
  quietOnEpipe(process.stderr);
  main(process.argv.slice(2), {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`sandgate: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = EXIT.error;
    },
  );
}
