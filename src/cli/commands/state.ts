import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../core/logger.js';
import { describeError, SandgateError } from '../../core/errors.js';
import { openStateDb, schemaVersion } from '../../store/db.js';
import { migratePg, PG_SCHEMA_VERSION } from '../../store/pg/db.js';
import { checkStateArchive, importSqliteState, importStateArchive } from '../../store/pg/import.js';
import { exportSqliteState } from '../../store/state-export.js';
import { openPostgresState } from '../../store/pg-state.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { createLogger } from '../logger.js';
import { formatStatus, stateStatus } from '../state-status.js';
import { pgConnection, quarantineDir, stateBackend } from '../compose/state.js';
import { EXIT, writeLine, type CliIo } from '../io.js';

const HELP = `usage: sandgate state <subcommand> [--config FILE] [--set KEY=VALUE]

The shared state: SQLite in stateDir, or PostgreSQL when state.url is set (docs/cluster.md).

  migrate            apply the schema migrations now (every node also does at start, under a lock)
  status [--json]    backend, schema version, rows per table, age of the oldest in-flight lease,
                     and the fingerprints (never the secrets) of the X-Sandgate-Mark key and the
                     PT Sandbox token: the ones the state holds, this configuration's, whether they match
  export --out FILE   write this host's SQLite state (stateDir: unexpired verdict cache, first
                     failures, scanner versions, PT Sandbox tasks, allow list, quarantine with its
                     messages) to FILE, a versioned, checksummed gzip file, for another node to
                     import; stop the host's sandgate processes first. FILE appears whole or not
                     at all; an existing FILE is not overwritten.
  import --from FILE|DIR [--quarantine-dir DIR]
                     copy a single host's SQLite state into the PostgreSQL state of this
                     configuration, from a FILE written by export (checked whole first: a corrupt,
                     truncated or foreign file imports nothing) or directly from a stateDir DIR.
                     Rows and quarantine items already there are kept, so it can run again (an
                     import cut short completes). The relay queue is not copied (it stays on its node).

exit codes: 0 done, 2 error`;

const OPTIONS = {
  ...CONFIG_OPTIONS,
  json: { type: 'boolean' },
  from: { type: 'string' },
  out: { type: 'string' },
  'quarantine-dir': { type: 'string' },
} as const;
const SUBCOMMANDS = ['migrate', 'status', 'export', 'import'];

export async function run(argv: string[], io: CliIo): Promise<number> {
  try {
    return await state(argv, io);
  } catch (err) {
    writeLine(io.stderr, `sandgate state: ${describeError(err)}`);
    return EXIT.error;
  }
}

async function state(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs('state', argv, OPTIONS);
  const [sub, ...extra] = positionals;
  if (values.help || sub === undefined || sub === 'help') {
    const asked = values.help === true || sub === 'help';
    writeLine(asked ? io.stdout : io.stderr, HELP);
    return asked ? EXIT.ok : EXIT.error;
  }
  if (!SUBCOMMANDS.includes(sub) || extra.length > 0) {
    writeLine(io.stderr, `sandgate state: unknown subcommand "${[sub, ...extra].join(' ')}"\n\n${HELP}`);
    return EXIT.error;
  }
  const config = loadConfigFromArgs(values, io).config;
  const log = createLogger(config, 'stderr');
  const backend = stateBackend(config);
  if (sub === 'migrate') {
    if (backend === 'sqlite') {
      const db = openStateDb(config.stateDir);
      const version = schemaVersion(db);
      db.close();
      writeLine(io.stdout, `sqlite ${config.stateDir}: schema version ${version}`);
      return EXIT.ok;
    }
    const connection = pgConnection(config, io.env);
    const applied = await migratePg(connection, log);
    writeLine(
      io.stdout,
      `postgresql ${connection.display}: schema version ${PG_SCHEMA_VERSION}` +
        (applied.length > 0 ? ` (applied ${applied.join(', ')})` : ' (nothing to apply)'),
    );
    return EXIT.ok;
  }
  if (sub === 'status') {
    const report = await stateStatus(config, { env: io.env, log, now: Date.now() });
    writeLine(io.stdout, values.json ? JSON.stringify(report, null, 2) : formatStatus(report));
    return EXIT.ok;
  }
  if (sub === 'export') return exportState(config, values.out, io);
  return importState(config, values, io, log);
}

async function exportState(config: Config, out: string | undefined, io: CliIo): Promise<number> {
  if (stateBackend(config) !== 'sqlite') {
    throw new SandgateError(
      'ERR_CONFIG_INVALID',
      "state export writes a single host's SQLite state: this configuration uses PostgreSQL (state.url); run it with the old host's configuration",
      { details: { path: 'state.url' } },
    );
  }
  if (out === undefined) {
    writeLine(io.stderr, `sandgate state export: --out FILE is required\n\n${HELP}`);
    return EXIT.error;
  }
  const file = resolve(io.cwd, out);
  if (existsSync(file)) {
    throw new SandgateError('ERR_BAD_REQUEST', `--out ${file}: exists; remove it or name another file`, {
      details: { file },
    });
  }
  if (!existsSync(join(config.stateDir, 'sandgate.db'))) {
    throw new SandgateError('ERR_BAD_REQUEST', `stateDir ${config.stateDir}: no sandgate state there`, {
      details: { path: 'stateDir' },
    });
  }
  const db = openStateDb(config.stateDir);
  try {
    const counts = await exportSqliteState(
      { db, stateDir: config.stateDir, quarantineDir: quarantineDir(config) },
      file,
      Date.now(),
    );
    writeLine(io.stdout, JSON.stringify({ out: file, ...counts }, null, 2));
    return EXIT.ok;
  } finally {
    db.close();
  }
}

async function importState(
  config: Config,
  values: { from?: string | undefined; 'quarantine-dir'?: string | undefined },
  io: CliIo,
  log: Logger,
): Promise<number> {
  if (stateBackend(config) !== 'postgresql') {
    throw new SandgateError('ERR_CONFIG_INVALID', 'state import copies into PostgreSQL: set state.url', {
      details: { path: 'state.url' },
    });
  }
  if (values.from === undefined) {
    writeLine(
      io.stderr,
      `sandgate state import: --from FILE (a state export) or DIR (the single host's stateDir) is required\n\n${HELP}`,
    );
    return EXIT.error;
  }
  const from = resolve(io.cwd, values.from);
  let isDir: boolean;
  try {
    isDir = statSync(from).isDirectory();
  } catch (cause) {
    throw new SandgateError('ERR_BAD_REQUEST', `--from ${from}: cannot read it`, {
      cause,
      details: { file: from },
    });
  }
  if (isDir && !existsSync(join(from, 'sandgate.db'))) {
    throw new SandgateError(
      'ERR_BAD_REQUEST',
      `--from ${from}: no sandgate state (sandgate.db) in this directory`,
      {
        details: { file: from },
      },
    );
  }
  // A file is checked whole before the database is even opened.
  if (!isDir) await checkStateArchive(from);
  const pgState = await openPostgresState(pgConnection(config, io.env), {
    log,
    relayQueue: () => {
      throw new SandgateError('ERR_STATE_DB', 'the relay queue is not part of the PostgreSQL state');
    },
  });
  try {
    if (!isDir) {
      const counts = await importStateArchive(from, pgState.pool, pgState.quarantine);
      writeLine(io.stdout, JSON.stringify({ from, ...counts }, null, 2));
      return EXIT.ok;
    }
    const fromQuarantine = resolve(io.cwd, values['quarantine-dir'] ?? resolve(from, 'quarantine'));
    const db = openStateDb(from);
    try {
      const counts = await importSqliteState(
        { db, quarantineDir: fromQuarantine },
        pgState.pool,
        pgState.quarantine,
        Date.now(),
      );
      writeLine(io.stdout, JSON.stringify({ from, ...counts }, null, 2));
      return EXIT.ok;
    } finally {
      db.close();
    }
  } finally {
    await pgState.close();
  }
}
