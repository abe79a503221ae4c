/**
 * Several sandgate processes on one state (a helper and a relay on one host, or nodes of a
 * cluster), as real processes (`sandgate scan`) against the PT Sandbox fake:
 * - the process that submitted a task is killed (-9) while the fake analyses it: another process
 *   adopts the task (exactly one of two), gets the verdict, and a third is answered from the cache,
 *   with no new task on the appliance;
 * - a process with another PT Sandbox token refuses to start while a running process polls tasks
 *   of the first token, and once that process is gone submits its own task instead of reading one
 *   it cannot read (the fake answers 404 to another token);
 * - a process whose X-Sandgate-Mark key differs from the state's refuses to start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import { startFakePtSandbox, type FakePtSandbox } from '../fakes/fake-pt-sandbox.js';
import { CgpBase, CgpHelper } from '../support/cgp.js';
import { readLog, until } from '../support/cluster-nodes.js';
import { runSandgate, SANDGATE_BIN, type CliResult } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

const TOKEN_A = 'cluster-token-a-0123456789abcdef';
const TOKEN_B = 'cluster-token-b-0123456789abcdef';

let sandbox: FakePtSandbox | undefined;
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await sandbox?.close();
  sandbox = undefined;
});

const MESSAGE = [
  'From: sender@example.org',
  'To: rcpt@example.net',
  'Subject: invoice',
  'Message-ID: <cluster-1@example.org>',
  'X-Test-Verdict: DANGEROUS',
  '',
  'Please see the attached invoice.',
  '',
].join('\r\n');

interface Node {
  readonly config: string;
  readonly logFile: string;
}

/** A config file for one process on the shared state `dir/state`, with its own log and token file. */
function node(dir: string, name: string, sb: FakePtSandbox, token: string): Node {
  const tokenFile = join(dir, `${name}.token`);
  writeFileSync(tokenFile, token);
  const logFile = join(dir, `${name}.log`);
  const config = join(dir, `${name}.yaml`);
  // JSON is YAML.
  writeFileSync(
    config,
    JSON.stringify({
      stateDir: join(dir, 'state'),
      log: { file: logFile, level: 'debug' },
      scan: { chain: ['pt-sandbox'], deadline: '20s' },
      cache: { lease: '1s' },
      scanners: {
        ptSandbox: {
          url: sb.url,
          tokenFile,
          taskLease: '1s',
          polling: { firstDelay: '50ms', interval: '200ms', slowInterval: '200ms' },
          retries: { attempts: 2, backoff: '50ms' },
        },
      },
    }),
  );
  return { config, logFile };
}

function scanArgs(n: Node, file: string): string[] {
  return ['scan', '--config', n.config, '--json', file];
}

const events = (n: Node): Array<Record<string, unknown>> => readLog(n.logFile);

function outcome(r: CliResult): Record<string, unknown> {
  const report = JSON.parse(r.stdout) as { outcomes: Array<Record<string, unknown>> };
  return report.outcomes[0] ?? {};
}

/** `sandgate scan` as a child we can kill. */
function startScan(args: string[]): ChildProcess {
  const child = spawn(process.execPath, [SANDGATE_BIN, ...args], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  children.push(child);
  return child;
}

async function kill9(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

describe('PT Sandbox tasks shared by processes on one state', () => {
  it('kill -9 of the submitter mid-analysis: one process adopts the task, the retry is a cache hit, no new task', async () => {
    const dir = tempDir('sg-cluster-');
    // Tasks run until the test ends them (finishAll), so a slow machine cannot finish them early.
    sandbox = await startFakePtSandbox({ taskDurationMs: 600_000, tokens: { [TOKEN_A]: ['analysis'] } });
    const sb = sandbox;
    const file = join(dir, 'm.eml');
    writeFileSync(file, MESSAGE);
    const a = node(dir, 'a', sb, TOKEN_A);
    const submitter = startScan(scanArgs(a, file));
    await until('the task on the fake', () => sb.tasksCreated() === 1);
    await until('the submission recorded', () => events(a).some((e) => e.event === 'pt.task_submitted'));
    await kill9(submitter);

    // Two processes retry the message at once (the MTA through two front ends).
    const b1 = node(dir, 'b1', sb, TOKEN_A);
    const b2 = node(dir, 'b2', sb, TOKEN_A);
    const retries = Promise.all([runSandgate(scanArgs(b1, file)), runSandgate(scanArgs(b2, file))]);
    await until(
      'the adoption',
      () => [...events(b1), ...events(b2)].some((e) => e.event === 'pt.task_adopted'),
      20_000,
    );
    sb.finishAll();
    const [r1, r2] = await retries;
    for (const r of [r1, r2]) {
      expect(r.code, r.stderr).toBe(1);
      expect(outcome(r)).toMatchObject({ scanner: 'pt-sandbox', kind: 'malicious' });
    }
    expect(sb.tasksCreated()).toBe(1);
    const adoptions = [...events(b1), ...events(b2)].filter((e) => e.event === 'pt.task_adopted');
    expect(adoptions).toHaveLength(1);
    expect(adoptions[0]).toMatchObject({ scanId: [...sb.tasks.keys()][0] });
    expect(String(adoptions[0]?.previousOwner)).toContain(`:${String(submitter.pid)}:`);
    expect([...events(b1), ...events(b2)].some((e) => e.event === 'pt.task_submitted')).toBe(false);

    // The next retry: from the cache, nothing asked of the appliance.
    const polls = sb.counters['analysis/checkTask'];
    const c = node(dir, 'c', sb, TOKEN_A);
    const r3 = await runSandgate(scanArgs(c, file));
    expect(r3.code, r3.stderr).toBe(1);
    expect(outcome(r3)).toMatchObject({ kind: 'malicious', cached: true });
    expect(sb.tasksCreated()).toBe(1);
    expect(sb.counters['analysis/checkTask']).toBe(polls);
    const state = openSqliteState(join(dir, 'state'));
    try {
      expect(await state.ptTasks.count()).toBe(0);
    } finally {
      await state.close();
    }
  });

  it('another token: refused at start while a running process polls tasks of the first; later its own task, never a read of the other', async () => {
    const dir = tempDir('sg-cluster-');
    sandbox = await startFakePtSandbox({
      taskDurationMs: 600_000,
      tokens: { [TOKEN_A]: ['analysis', 'source'], [TOKEN_B]: ['analysis', 'source'] },
    });
    const sb = sandbox;
    const file = join(dir, 'm.eml');
    writeFileSync(file, MESSAGE);
    const a = node(dir, 'a', sb, TOKEN_A);
    const submitter = startScan(scanArgs(a, file));
    await until('the task on the fake', () => sb.tasksCreated() === 1);
    await until('the submission recorded', () => events(a).some((e) => e.event === 'pt.task_submitted'));

    const b = node(dir, 'b', sb, TOKEN_B);
    const refused = await runSandgate(scanArgs(b, file));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('[ERR_PT_TOKEN_MISMATCH]');
    expect(refused.stderr).toContain('scanners.ptSandbox.tokenFile');
    expect(refused.stderr + refused.stdout).not.toContain(TOKEN_A);
    expect(refused.stderr + refused.stdout).not.toContain(TOKEN_B);
    expect(events(b).find((e) => e.event === 'pt.token_mismatch')).toMatchObject({ tasks: 1 });
    expect(sb.tasksCreated()).toBe(1);

    // The process with the first token dies; once its lease ran out the other token may start,
    // and submits the content under its own token instead of reading a task it cannot read.
    await kill9(submitter);
    const state = openSqliteState(join(dir, 'state'));
    try {
      await until('the lease of the dead process to run out', async () => {
        return (await state.ptTasks.tokenFingerprints(0, Date.now())).length === 0;
      });
    } finally {
      await state.close();
    }
    sb.setTaskDuration(0);
    const later = await runSandgate(scanArgs(b, file));
    expect(later.code, later.stderr).toBe(1);
    expect(outcome(later)).toMatchObject({ kind: 'malicious' });
    expect(sb.tasksCreated()).toBe(2);
    expect(sb.foreignTokenReads()).toBe(0);
    expect(events(b).some((e) => e.event === 'pt.task_foreign_token')).toBe(true);
    expect(events(b).some((e) => e.event === 'pt.task_adopted')).toBe(false);
    const ids = [...sb.tasks.values()];
    expect(ids.map((t) => t.token)).toEqual([TOKEN_A, TOKEN_B]);

    // The fake binds a task to its token: polling the first task with the second is a 404.
    const res = await fetch(`${sb.url}/api/v1/analysis/checkTask`, {
      method: 'POST',
      headers: { 'X-API-Key': TOKEN_B, 'Content-Type': 'application/json' },
      body: JSON.stringify({ scan_id: ids[0]?.scanId }),
    });
    expect(res.status).toBe(404);
    await res.arrayBuffer();
    expect(sb.foreignTokenReads()).toBe(1);
  });
});

describe('the X-Sandgate-Mark key shared by processes on one state', () => {
  it('a process whose key differs refuses to start, naming headers.markKeyFile; the same key starts', async () => {
    const dir = tempDir('sg-cluster-');
    const file = join(dir, 'm.eml');
    writeFileSync(file, 'From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n');
    const config = (name: string, key: string): string => {
      const keyFile = join(dir, `${name}.key`);
      writeFileSync(keyFile, `${key}\n`, { mode: 0o600 });
      const path = join(dir, `${name}.yaml`);
      writeFileSync(
        path,
        JSON.stringify({
          stateDir: join(dir, 'state'),
          log: { file: join(dir, `${name}.log`), level: 'info' },
          headers: { markKeyFile: keyFile },
        }),
      );
      return path;
    };
    const key = randomBytes(32).toString('hex');
    const first = await runSandgate(['scan', '--config', config('a', key), file]);
    expect(first.code, first.stderr).toBe(0);
    const other = await runSandgate(['scan', '--config', config('b', randomBytes(32).toString('hex')), file]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain('[ERR_MARK_KEY_MISMATCH]');
    expect(other.stderr).toContain('headers.markKeyFile');
    expect(other.stderr).not.toContain(key);
    const logged = readFileSync(join(dir, 'b.log'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged.find((e) => e.event === 'cluster.mark_key_mismatch')).toBeDefined();
    // A copy of the first key (another node with the shared file) starts.
    const same = await runSandgate(['scan', '--config', config('c', key), file]);
    expect(same.code, same.stderr).toBe(0);
  });

  it('a helper whose key differs stays up and answers REJECTED (tempfail), says why in a * line, nothing on stderr', async () => {
    const base = new CgpBase('sg-cluster-cgp-');
    onTestFinished(() => base.remove());
    const stateDir = join(base.dir, 'state');
    const keyA = join(base.dir, 'a.key');
    const keyB = join(base.dir, 'b.key');
    writeFileSync(keyA, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    writeFileSync(keyB, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    // The relay (here `sandgate scan`) started first with key A.
    const eml = join(base.dir, 'a.eml');
    writeFileSync(eml, 'From: a@example.org\r\n\r\nhello\r\n');
    const first = await runSandgate([
      'scan',
      '--config',
      base.config('a.yaml', { stateDir, headers: { markKeyFile: keyA } }),
      eml,
    ]);
    expect(first.code, first.stderr).toBe(0);
    const f = base.queueFile('Queue/1.msg', { body: 'From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n' });
    const h = CgpHelper.start({
      base,
      config: base.config(
        'b.yaml',
        JSON.stringify({
          stateDir,
          log: { file: join(base.dir, 'helper.log') },
          headers: { markKeyFile: keyB },
        }),
      ),
    });
    onTestFinished(() => h.kill());
    expect(await h.request('1', 'INTF 4')).toBe('1 INTF 4');
    expect(await h.request('2', `FILE ${f}`)).toMatch(/^2 REJECTED /);
    const why = await h.waitForInfo(/cannot scan/);
    expect(why).toContain('ERR_MARK_KEY_MISMATCH');
    expect(why).toContain('headers.markKeyFile');
    const { exit } = await h.quit();
    expect(exit.code).toBe(0);
    expect(h.stderr).toBe('');
  });
});
