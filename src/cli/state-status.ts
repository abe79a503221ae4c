import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { MARK_KEY_FINGERPRINT, PT_TOKEN_FINGERPRINT, secretFingerprint } from '../core/cluster.js';
import { describeError, isSandgateError, SandgateError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { openStateDb, schemaVersion } from '../store/db.js';
import { sqliteFingerprints, type StoredFingerprints } from '../store/fingerprints.js';
import { MIGRATIONS } from '../store/migrations.js';
import { connectClient, connectionError } from '../store/pg/db.js';
import { readToken } from './compose/pt-token.js';
import { pgConnection, stateBackend } from './compose/state.js';
import { readMarkKey } from './mark-key.js';

const SQLITE_TABLES = [
  'verdict_cache',
  'inflight_scan',
  'first_failure',
  'scanner_version',
  'pt_task',
  'pt_task_history',
  'pt_process',
  'allow_hash',
  'quarantine',
  'relay_queue',
  'cluster_fingerprint',
  'cluster_job',
];

/** One shared secret: the fingerprint the state holds, this configuration's, and whether they agree. */
export interface SecretStatus {
  /** Where this configuration reads the secret (a key and a file or variable name; never the secret). */
  readonly source: string;
  /** This configuration's fingerprint; null when there is none (not configured, unreadable). */
  readonly configured: string | null;
  /** Why there is no configured fingerprint (an error code and message naming the file). */
  readonly problem?: string;
}

export interface StateStatusReport {
  readonly backend: 'sqlite' | 'postgresql';
  readonly location: string;
  readonly schemaVersion: number;
  readonly knownVersion: number;
  readonly rows: Record<string, number>;
  readonly oldestLeaseMs: number | null;
  readonly fingerprints: {
    readonly markKey: SecretStatus & {
      readonly stored: string | null;
      /** null: nothing to compare (no key recorded yet, or none configured). */
      readonly match: boolean | null;
    };
    readonly ptToken: SecretStatus & {
      readonly stored: ReadonlyArray<{ fingerprint: string; tasks: number; leased: number }>;
      /** Every stored fingerprint is this configuration's; null when nothing to compare. */
      readonly match: boolean | null;
      /** A process of this configuration would refuse to start (ERR_PT_TOKEN_MISMATCH). */
      readonly refusesStart: boolean;
    };
  };
}

/** `sandgate state status`: what the configured state holds, read without changing it. */
export async function stateStatus(
  config: Config,
  deps: {
    readonly env: Readonly<Record<string, string | undefined>>;
    readonly log: Logger;
    readonly now: number;
  },
): Promise<StateStatusReport> {
  const { now } = deps;
  const backend = stateBackend(config);
  let base: Omit<StateStatusReport, 'fingerprints'>;
  let stored: StoredFingerprints;
  if (backend === 'sqlite') {
    const db = openStateDb(config.stateDir);
    try {
      const rows: Record<string, number> = {};
      for (const t of SQLITE_TABLES)
        rows[t] = (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
      const oldest = (
        db.prepare('SELECT min(started_at) AS o FROM inflight_scan').get() as { o: number | null }
      ).o;
      base = {
        backend,
        location: config.stateDir,
        schemaVersion: schemaVersion(db),
        knownVersion: Math.max(...MIGRATIONS.map((m) => m.version)),
        rows,
        oldestLeaseMs: oldest === null ? null : Math.max(0, now - oldest),
      };
      stored = sqliteFingerprints(db, now);
    } finally {
      db.close();
    }
  } else {
    const connection = pgConnection(config, deps.env);
    const { openPostgresState } = await import('../store/pg-state.js');
    // One connection first, closed whatever happens: a refused password or certificate is named
    // (ERR_STATE_AUTH, ERR_STATE_TLS) and leaves no half-open socket behind.
    const probe = await connectClient(connection, deps.log).catch((cause: unknown) => {
      throw connectionError(connection, cause);
    });
    await probe.end();
    const pgState = await openPostgresState(connection, {
      log: deps.log,
      migrate: false,
      relayQueue: () => {
        throw new SandgateError('ERR_STATE_DB', 'the relay queue is not part of the PostgreSQL state');
      },
    });
    try {
      const s = await pgState.status(now).catch((cause: unknown) => {
        throw connectionError(connection, cause);
      });
      base = {
        backend,
        location: s.url,
        schemaVersion: s.schemaVersion,
        knownVersion: s.knownVersion,
        rows: s.rows,
        oldestLeaseMs: s.oldestLeaseMs ?? null,
      };
      stored = s.fingerprints;
    } finally {
      await pgState.close();
    }
  }
  return { ...base, fingerprints: fingerprints(config, deps.env, stored) };
}

function fingerprints(
  config: Config,
  env: Readonly<Record<string, string | undefined>>,
  stored: StoredFingerprints,
): StateStatusReport['fingerprints'] {
  const keyPath = config.headers.markKeyFile ?? join(config.stateDir, 'mark.key');
  const mark: SecretStatus = existsSync(keyPath)
    ? secret(`headers.markKeyFile ${keyPath}`, () =>
        secretFingerprint(readMarkKey(keyPath), MARK_KEY_FINGERPRINT),
      )
    : {
        source: `headers.markKeyFile ${keyPath}`,
        configured: null,
        problem: 'no key file yet (the first process to start creates a random one)',
      };
  const pt = config.scanners.ptSandbox;
  const ptUsed = config.scan.chain.includes('pt-sandbox') || pt.tokenFile !== undefined;
  const token = ptUsed
    ? secret(
        pt.tokenFile !== undefined
          ? `scanners.ptSandbox.tokenFile ${pt.tokenFile}`
          : `scanners.ptSandbox.tokenEnv ${pt.tokenEnv}`,
        () => secretFingerprint(readToken(pt, env), PT_TOKEN_FINGERPRINT),
      )
    : { source: 'scanners.ptSandbox: not in scan.chain', configured: null };
  const tokens = stored.ptTokens;
  const ours = token.configured;
  return {
    markKey: {
      ...mark,
      stored: stored.markKey ?? null,
      match:
        stored.markKey === undefined || mark.configured === null ? null : stored.markKey === mark.configured,
    },
    ptToken: {
      ...token,
      stored: tokens,
      match: tokens.length === 0 || ours === null ? null : tokens.every((t) => t.fingerprint === ours),
      refusesStart: ours !== null && tokens.some((t) => t.fingerprint !== ours && t.leased > 0),
    },
  };
}

function secret(source: string, fingerprint: () => string): SecretStatus {
  try {
    return { source, configured: fingerprint() };
  } catch (err) {
    if (!isSandgateError(err)) throw err;
    return { source, configured: null, problem: describeError(err) };
  }
}

/** The text form of the report (`sandgate state status` without --json). */
export function formatStatus(r: StateStatusReport): string {
  const { markKey, ptToken } = r.fingerprints;
  const configured = (x: SecretStatus): string => x.configured ?? `- ${x.problem ?? ''}`.trimEnd();
  const markMatch =
    markKey.match === null
      ? markKey.stored === null
        ? '- (nothing recorded yet: the first process to start records its key)'
        : '-'
      : markKey.match
        ? 'yes'
        : 'NO: a process of this configuration refuses to start (ERR_MARK_KEY_MISMATCH)';
  const tokenMatch =
    ptToken.match === null
      ? ptToken.stored.length === 0
        ? '- (no PT Sandbox tasks in the state)'
        : '-'
      : ptToken.match
        ? 'yes'
        : ptToken.refusesStart
          ? 'NO: running processes poll tasks of another token; a process of this configuration refuses to start (ERR_PT_TOKEN_MISMATCH)'
          : 'NO: tasks of another token, left by stopped processes (submitted again when needed)';
  return [
    `backend         ${r.backend} (${r.location})`,
    `schema version  ${r.schemaVersion} (this build: ${r.knownVersion})`,
    `oldest lease    ${r.oldestLeaseMs === null ? '-' : `${r.oldestLeaseMs} ms`}`,
    'rows:',
    ...Object.entries(r.rows).map(([t, n]) => `  ${t.padEnd(20)}${n}`),
    `mark key fingerprint: ${markKey.source}`,
    `  state           ${markKey.stored ?? '-'}`,
    `  configuration   ${configured(markKey)}`,
    `  match           ${markMatch}`,
    `PT Sandbox token fingerprint: ${ptToken.source}`,
    ...(ptToken.stored.length === 0
      ? ['  state           -']
      : ptToken.stored.map(
          (t, i) =>
            `  ${i === 0 ? 'state' : '     '}           ${t.fingerprint} (${t.tasks} task(s), ${t.leased} leased by a running process)`,
        )),
    `  configuration   ${configured(ptToken)}`,
    `  match           ${tokenMatch}`,
  ].join('\n');
}
