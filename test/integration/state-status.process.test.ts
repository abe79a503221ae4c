/**
 * `sandgate state status` as a real process, on SQLite and on PostgreSQL: the fingerprints of the
 * X-Sandgate-Mark key and of the PT Sandbox token(s) the state holds, this configuration's, and
 * whether they match (text and --json); never the key or the token themselves.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MARK_KEY_FINGERPRINT, PT_TOKEN_FINGERPRINT, secretFingerprint } from '../../src/core/cluster.js';
import { silentLogger } from '../../src/core/logger.js';
import type { StatePorts } from '../../src/core/ports.js';
import { openPostgresState } from '../../src/store/pg-state.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import type { StateStatusReport } from '../../src/cli/state-status.js';
import { runSandgate } from '../support/cli.js';
import { testConnection } from '../support/pg-backend.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { tempDir } from '../support/tmp.js';

const TOKEN_A = 'status-token-a-0123456789abcdef';
const TOKEN_B = 'status-token-b-0123456789abcdef';

let server: TestPostgres | undefined;
beforeAll(async () => {
  server = await startPostgres();
}, 60_000);
afterAll(async () => {
  await server?.stop();
});

interface Setup {
  readonly dir: string;
  readonly stateDir: string;
  /** `state: {...}` of the config (PostgreSQL), or nothing (SQLite). */
  readonly state: Record<string, unknown> | undefined;
  open(): Promise<StatePorts>;
}

const backends: Record<'sqlite' | 'postgresql', () => Promise<Setup>> = {
  sqlite: () => {
    const dir = tempDir('sg-status-');
    const stateDir = join(dir, 'state');
    return Promise.resolve({
      dir,
      stateDir,
      state: undefined,
      open: () => Promise.resolve(openSqliteState(stateDir)),
    });
  },
  postgresql: async () => {
    if (server === undefined) throw new Error('not started');
    const s = server;
    const dir = tempDir('sg-status-');
    const database = await s.createDatabase();
    return {
      dir,
      stateDir: join(dir, 'state'),
      state: { url: `postgres://${s.user}@${s.host}:${s.port}/${database}`, tls: 'disable' },
      open: () =>
        openPostgresState(
          { ...testConnection(s), database },
          {
            log: silentLogger,
            relayQueue: () => {
              throw new Error('no relay queue here');
            },
          },
        ),
    };
  },
};

function config(s: Setup, extra: { markKeyFile: string; tokenFile: string }): string {
  const file = join(s.dir, `sandgate-${randomBytes(4).toString('hex')}.yaml`);
  writeFileSync(
    file,
    JSON.stringify({
      stateDir: s.stateDir,
      ...(s.state !== undefined ? { state: s.state } : {}),
      headers: { markKeyFile: extra.markKeyFile },
      scan: { chain: ['rules', 'pt-sandbox'] },
      scanners: { ptSandbox: { url: 'https://pt-sandbox.invalid', tokenFile: extra.tokenFile } },
    }),
  );
  return file;
}

function secretFile(dir: string, name: string, content: string): string {
  const file = join(dir, name);
  writeFileSync(file, `${content}\n`, { mode: 0o600 });
  return file;
}

async function seedTask(state: StatePorts, key: string, token: string, leaseUntil: number): Promise<void> {
  const now = Date.now();
  const claim = await state.ptTasks.claim(key, 'fp', {
    mode: 'analysis',
    owner: `owner-${key}`,
    now,
    maxTaskAgeMs: 900_000,
    claimTimeoutMs: 60_000,
    tokenFingerprint: secretFingerprint(token, PT_TOKEN_FINGERPRINT),
    leaseUntil,
  });
  expect(claim.claimed).toBe(true);
  await state.ptTasks.setScanId(key, 'fp', `owner-${key}`, `scan-${key}`, now);
}

describe.each(['sqlite', 'postgresql'] as const)('sandgate state status on %s', (backend) => {
  it('shows the stored and configured fingerprints of the mark key and the PT Sandbox token, never the secrets', async () => {
    const s = await backends[backend]();
    const keyHex = randomBytes(32).toString('hex');
    const otherKeyHex = randomBytes(32).toString('hex');
    const markKeyFile = secretFile(s.dir, 'mark.key', keyHex);
    const otherKeyFile = secretFile(s.dir, 'other-mark.key', otherKeyHex);
    const tokenA = secretFile(s.dir, 'a.token', TOKEN_A);
    const tokenB = secretFile(s.dir, 'b.token', TOKEN_B);
    const markFp = secretFingerprint(Buffer.from(keyHex, 'hex'), MARK_KEY_FINGERPRINT);
    const fpA = secretFingerprint(TOKEN_A, PT_TOKEN_FINGERPRINT);
    const fpB = secretFingerprint(TOKEN_B, PT_TOKEN_FINGERPRINT);

    const state = await s.open();
    try {
      await state.cluster.claimFingerprint(MARK_KEY_FINGERPRINT, markFp, Date.now());
      // A task of token A whose owner runs, one of token B whose owner stopped (lease ran out).
      await seedTask(state, 'a'.repeat(64), TOKEN_A, Date.now() + 600_000);
      await seedTask(state, 'b'.repeat(64), TOKEN_B, Date.now() - 1000);
    } finally {
      await state.close();
    }

    const status = async (c: string, json: boolean) => {
      const r = await runSandgate(['state', 'status', '--config', c, ...(json ? ['--json'] : [])]);
      expect(r.code, r.stderr).toBe(0);
      for (const secret of [keyHex, otherKeyHex, TOKEN_A, TOKEN_B]) {
        expect(r.stdout).not.toContain(secret);
        expect(r.stderr).not.toContain(secret);
      }
      return r.stdout;
    };

    // Same key, token A: the key matches; the token differs from B's stopped task only.
    const same = config(s, { markKeyFile, tokenFile: tokenA });
    const report = JSON.parse(await status(same, true)) as StateStatusReport;
    expect(report.backend).toBe(backend);
    expect(report.fingerprints.markKey).toMatchObject({ stored: markFp, configured: markFp, match: true });
    expect(report.fingerprints.ptToken).toMatchObject({
      configured: fpA,
      match: false,
      refusesStart: false,
    });
    const byFp = (x: { fingerprint: string }, y: { fingerprint: string }) =>
      x.fingerprint < y.fingerprint ? -1 : 1;
    expect([...report.fingerprints.ptToken.stored].sort(byFp)).toEqual(
      [
        { fingerprint: fpA, tasks: 1, leased: 1 },
        { fingerprint: fpB, tasks: 1, leased: 0 },
      ].sort(byFp),
    );
    const text = await status(same, false);
    expect(text).toMatch(new RegExp(`^  state +${markFp}$`, 'm'));
    expect(text).toMatch(new RegExp(`^  configuration +${markFp}$`, 'm'));
    expect(text).toMatch(/^mark key fingerprint: headers\.markKeyFile .*\n(?:.*\n){2} {2}match +yes$/m);
    expect(text).toContain(`${fpA} (1 task(s), 1 leased by a running process)`);
    expect(text).toContain(`${fpB} (1 task(s), 0 leased by a running process)`);

    // Another key and token B: the key differs; token B differs from A's running task: refused.
    const other = config(s, { markKeyFile: otherKeyFile, tokenFile: tokenB });
    const otherReport = JSON.parse(await status(other, true)) as StateStatusReport;
    expect(otherReport.fingerprints.markKey).toMatchObject({
      stored: markFp,
      configured: secretFingerprint(Buffer.from(otherKeyHex, 'hex'), MARK_KEY_FINGERPRINT),
      match: false,
    });
    expect(otherReport.fingerprints.ptToken).toMatchObject({
      configured: fpB,
      match: false,
      refusesStart: true,
    });
    const otherText = await status(other, false);
    expect(otherText).toMatch(/^ {2}match +NO: .*ERR_MARK_KEY_MISMATCH/m);
    expect(otherText).toMatch(/^ {2}match +NO: .*ERR_PT_TOKEN_MISMATCH/m);

    // A token file that cannot be read: said, with its code; the status still answers.
    const missing = config(s, { markKeyFile, tokenFile: join(s.dir, 'missing.token') });
    const missingReport = JSON.parse(await status(missing, true)) as StateStatusReport;
    expect(missingReport.fingerprints.ptToken.configured).toBeNull();
    expect(missingReport.fingerprints.ptToken.problem).toContain('[ERR_SECRET_FILE]');
  }, 60_000);
});
