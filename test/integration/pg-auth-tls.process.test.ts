/**
 * state.passwordFile / SANDGATE_STATE_PASSWORD / PGPASSWORD and state.tls / caFile / servername
 * against a real PostgreSQL that wants a scram-sha-256 password on loopback and speaks TLS with a
 * certificate from a throw-away CA: `sandgate state migrate` and `status` as real processes connect,
 * verify the CA, and fail with ERR_STATE_AUTH / ERR_STATE_TLS (never printing the password).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSandgate, type CliResult } from '../support/cli.js';
import { startPostgres, type TestPostgres } from '../support/postgres.js';

const PASSWORD = 'pw-Sandgate-7f3a9c-state';
const WRONG = 'pw-not-this-one-4411';

let server: TestPostgres | undefined;
let dir = '';
beforeAll(async () => {
  server = await startPostgres({ password: PASSWORD, tls: { names: ['db.test'] } });
  dir = mkdtempSync(join(tmpdir(), 'sg-pg-auth-'));
}, 60_000);
afterAll(async () => {
  await server?.stop();
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

let configs = 0;
/** A config file with `state` (url added) and a run of `sandgate state <sub>` with it. */
async function state(
  sub: 'migrate' | 'status',
  st: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<CliResult> {
  if (server === undefined) throw new Error('not started');
  const file = join(dir, `c${++configs}.yaml`);
  writeFileSync(
    file,
    JSON.stringify({
      stateDir: join(dir, 'state'),
      state: {
        url: `postgres://${server.user}@${server.host}:${server.port}/${server.database}`,
        connectTimeout: '3s',
        ...st,
      },
    }),
  );
  const r = await runSandgate(['state', sub, '--config', file], { env });
  for (const secret of [PASSWORD, WRONG]) {
    expect(r.stdout).not.toContain(secret);
    expect(r.stderr).not.toContain(secret);
  }
  return r;
}

function passwordFile(content: string): string {
  const file = join(dir, `pw-${content.length}-${++configs}`);
  writeFileSync(file, `${content}\n`, { mode: 0o600 });
  return file;
}

const ok = (r: CliResult) => {
  expect(r.code, r.stderr).toBe(0);
  // Only log lines (migrations applied): no warning, e.g. about a server name that is an IP address.
  expect(r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{"level":30'))).toEqual([]);
};
const failed = (r: CliResult, code: string) => {
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(`[${code}]`);
};

describe('the PostgreSQL state with a password and TLS', () => {
  it('verify-full with state.caFile and the password from state.passwordFile: migrate and status work', async () => {
    const ca = server?.tls?.caFile ?? '';
    const pw = passwordFile(PASSWORD);
    const migrated = await state('migrate', { tls: 'verify-full', caFile: ca, passwordFile: pw });
    ok(migrated);
    expect(migrated.stdout).toMatch(/schema version \d+/);
    const status = await state('status', { tls: 'verify-full', caFile: ca, passwordFile: pw });
    ok(status);
    expect(status.stdout).toMatch(/^backend +postgresql/m);
    // The certificate names db.test as well: checked against state.servername.
    ok(await state('migrate', { tls: 'verify-full', caFile: ca, passwordFile: pw, servername: 'db.test' }));
  }, 60_000);

  it('the password from SANDGATE_STATE_PASSWORD, else PGPASSWORD', async () => {
    const st = { tls: 'verify-full', caFile: server?.tls?.caFile ?? '' };
    ok(await state('migrate', st, { SANDGATE_STATE_PASSWORD: PASSWORD }));
    ok(await state('status', st, { PGPASSWORD: PASSWORD }));
    // SANDGATE_STATE_PASSWORD wins over PGPASSWORD; state.passwordFile over both.
    ok(await state('migrate', st, { SANDGATE_STATE_PASSWORD: PASSWORD, PGPASSWORD: WRONG }));
    failed(
      await state(
        'migrate',
        { ...st, passwordFile: passwordFile(WRONG) },
        { SANDGATE_STATE_PASSWORD: PASSWORD },
      ),
      'ERR_STATE_AUTH',
    );
  }, 60_000);

  it('a wrong or missing password: ERR_STATE_AUTH, the password never printed', async () => {
    const st = { tls: 'verify-full', caFile: server?.tls?.caFile ?? '' };
    failed(await state('migrate', { ...st, passwordFile: passwordFile(WRONG) }), 'ERR_STATE_AUTH');
    failed(await state('status', st, { SANDGATE_STATE_PASSWORD: WRONG }), 'ERR_STATE_AUTH');
    failed(await state('migrate', st), 'ERR_STATE_AUTH');
  }, 60_000);

  it('a CA that did not sign the server certificate, or another server name: ERR_STATE_TLS; require skips the check', async () => {
    const pw = passwordFile(PASSWORD);
    const other = server?.tls?.otherCaFile ?? '';
    failed(await state('migrate', { tls: 'verify-full', caFile: other, passwordFile: pw }), 'ERR_STATE_TLS');
    failed(await state('status', { tls: 'verify-full', caFile: other, passwordFile: pw }), 'ERR_STATE_TLS');
    // Without state.caFile, the system CAs: they do not know the test CA either.
    failed(await state('migrate', { tls: 'verify-full', passwordFile: pw }), 'ERR_STATE_TLS');
    failed(
      await state('migrate', {
        tls: 'verify-full',
        caFile: server?.tls?.caFile ?? '',
        passwordFile: pw,
        servername: 'other.test',
      }),
      'ERR_STATE_TLS',
    );
    ok(await state('migrate', { tls: 'require', passwordFile: pw }));
  }, 60_000);
});
