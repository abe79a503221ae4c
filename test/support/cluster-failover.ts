/**
 * Nodes of a sandgate cluster on one PostgreSQL database, as real processes, for the failover
 * tests: a database of its own per test, `sandgate relay` processes (admin API on, stdout and
 * stderr captured), a plain SMTP client that reports the fate of each message (the reply code,
 * or the stage where the connection went away), and the admin API over HTTP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { SANDGATE_BIN } from './cli.js';
import type { TestPostgres } from './postgres.js';
import { SmtpTalk, type TalkReply } from './smtp-talk.js';

let databases = 0;

export interface ClusterDatabase {
  readonly name: string;
  /** state.url for the nodes (trust authentication: no password). */
  readonly url: string;
  /** Runs a query on the database as the superuser (a connection per call). */
  query<T extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** DROP DATABASE ... WITH (FORCE); call after every node has stopped. */
  drop(): Promise<void>;
}

/** A fresh, empty database on `server`: the nodes of one test share it, the next test gets another. */
export async function freshDatabase(server: TestPostgres): Promise<ClusterDatabase> {
  const name = `sgfo_${process.pid}_${++databases}`;
  const admin = await server.admin();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = `postgres://${server.user}@${server.host}:${server.port}/${name}`;
  const pg = await import('pg');
  return {
    name,
    url,
    async query<T extends Record<string, unknown>>(sql: string, params: unknown[] = []) {
      const c = new pg.default.Client({
        host: server.host,
        port: server.port,
        user: server.user,
        database: name,
        connectionTimeoutMillis: 10_000,
      });
      c.on('error', () => undefined);
      await c.connect();
      try {
        return (await c.query<T>(sql, params)).rows;
      } finally {
        await c.end();
      }
    },
    async drop() {
      const a = await server.admin();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

/** A mark key file every node reads (the cluster's shared X-Sandgate-Mark key). */
export function sharedMarkKey(dir: string): string {
  const file = join(dir, 'mark.key');
  writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return file;
}

export interface NodeFiles {
  readonly dir: string;
  readonly url: string;
  readonly markKeyFile: string;
  /** The admin API's bearer token file. */
  readonly tokenFile: string;
  /** The PT Sandbox fake after the rules scanner in the chain, with the token every node shares. */
  readonly ptSandbox?: { readonly url: string; readonly tokenFile: string };
}

/**
 * The shared files of a test cluster in `dir`: the mark key, an admin token, and the PT Sandbox
 * token when `ptSandbox` is given (the fake's URL and a token it accepts).
 */
export function clusterFiles(
  dir: string,
  url: string,
  token: string,
  ptSandbox?: { readonly url: string; readonly token: string },
): NodeFiles {
  const tokenFile = join(dir, 'admin.token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  let pt: NodeFiles['ptSandbox'];
  if (ptSandbox !== undefined) {
    const ptTokenFile = join(dir, 'pt.token');
    writeFileSync(ptTokenFile, `${ptSandbox.token}\n`, { mode: 0o600 });
    pt = { url: ptSandbox.url, tokenFile: ptTokenFile };
  }
  return {
    dir,
    url,
    markKeyFile: sharedMarkKey(dir),
    tokenFile,
    ...(pt !== undefined ? { ptSandbox: pt } : {}),
  };
}

/** The state and scanning part of a node's config: the shared database, its own stateDir. */
export function nodeBase(files: NodeFiles, name: string): Record<string, unknown> {
  const stateDir = join(files.dir, name, 'state');
  mkdirSync(stateDir, { recursive: true });
  return {
    stateDir,
    // Short timeouts: a node must notice a database that went away quickly and tempfail.
    state: { url: files.url, tls: 'disable', queryTimeout: '2s', connectTimeout: '1s', pool: { max: 4 } },
    headers: { markKeyFile: files.markKeyFile },
    ...(files.ptSandbox === undefined
      ? { scan: { chain: ['rules'] } }
      : {
          scan: { chain: ['rules', 'pt-sandbox'] },
          scanners: {
            ptSandbox: {
              url: files.ptSandbox.url,
              tokenFile: files.ptSandbox.tokenFile,
              polling: { firstDelay: '20ms', interval: '50ms', slowInterval: '200ms' },
              retries: { attempts: 2, backoff: '50ms' },
            },
          },
        }),
  };
}

/** A relay node's config file: listens on port 0, hands on to `nextHopPort`, releases there too. */
export function relayNodeConfig(files: NodeFiles, name: string, nextHopPort: number): string {
  const hop = `smtp://127.0.0.1:${nextHopPort}`;
  const config = {
    ...nodeBase(files, name),
    log: { level: 'info' },
    relay: { listen: '127.0.0.1:0', nextHop: hop, deadline: '20s' },
    admin: { enabled: true, listen: '127.0.0.1:0', tokenFile: files.tokenFile },
    quarantine: { release: { target: hop } },
  };
  const file = join(files.dir, `${name}.json`);
  // JSON is YAML.
  writeFileSync(file, JSON.stringify(config));
  return file;
}

export interface RelayNode {
  readonly name: string;
  readonly configFile: string;
  readonly child: ChildProcess;
  readonly relayPort: number;
  readonly adminPort: number;
  /** Every JSON log line written to stdout so far. */
  readonly records: Array<Record<string, unknown>>;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** true while the process runs. */
  alive(): boolean;
  stop(): Promise<void>;
}

/** Starts `sandgate relay --config FILE` and resolves once its SMTP and admin ports listen. */
export async function startRelayNode(name: string, configFile: string): Promise<RelayNode> {
  const child = spawn(process.execPath, [SANDGATE_BIN, 'relay', '--config', configFile], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const records: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const stop = (): Promise<void> =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  const ports: { relay?: number; admin?: number } = {};
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${name}: not listening after 30 s; ${stderr}`)),
        30_000,
      );
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited with ${code} before listening: ${stderr}`));
      });
      createInterface({ input: child.stdout }).on('line', (line) => {
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          rec = { event: 'test.unparsable_stdout', line };
        }
        records.push(rec);
        if (rec.event === 'relay.listening') ports.relay = rec.port as number;
        if (rec.event === 'admin.listening') ports.admin = rec.port as number;
        if (ports.relay !== undefined && ports.admin !== undefined) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } catch (err) {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw err;
  }
  return {
    name,
    configFile,
    child,
    relayPort: ports.relay!,
    adminPort: ports.admin!,
    records,
    stderr: () => stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    stop,
  };
}

/** What became of one message sent over SMTP. */
export interface SmtpFate {
  /** The reply to the final dot, or to the command that refused the message. */
  readonly code?: number;
  readonly text?: string;
  /** Where it ended: 'data' (after the dot), or the command that was refused, or where the connection broke. */
  readonly stage: 'greeting' | 'ehlo' | 'mail' | 'rcpt' | 'data-cmd' | 'data';
  /** The connection went away (or did not answer in time) before a reply. */
  readonly broken?: string;
}

/** Dot-stuffs a message with CRLF line ends for DATA. */
function dataBytes(message: Buffer): Buffer {
  const text = message.toString('latin1').replace(/\r?\n/g, '\r\n');
  const stuffed = text.replace(/^\./gm, '..');
  return Buffer.from(`${stuffed}${stuffed.endsWith('\r\n') ? '' : '\r\n'}.\r\n`, 'latin1');
}

/**
 * Sends one message on a connection of its own and reports its fate; never throws. A reply that
 * does not come within `timeoutMs` counts as a broken connection (the client gives up, keeps the
 * message).
 */
export async function smtpSend(
  port: number,
  envelope: { readonly from: string; readonly to: readonly string[] },
  message: Buffer,
  timeoutMs = 30_000,
): Promise<SmtpFate> {
  let stage: SmtpFate['stage'] = 'greeting';
  let talk: SmtpTalk | undefined;
  try {
    talk = await SmtpTalk.open(port);
    const t = talk;
    const read = (): Promise<TalkReply> =>
      new Promise<TalkReply>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
        t.read().then(
          (r) => {
            clearTimeout(timer);
            resolve(r);
          },
          (err: unknown) => {
            clearTimeout(timer);
            reject(err instanceof Error ? err : new Error(String(err)));
          },
        );
      });
    const cmd = (line: string): Promise<TalkReply> => {
      t.send(`${line}\r\n`);
      return read();
    };
    let r = await read();
    if (r.code !== 220) return { stage, code: r.code, text: r.text };
    stage = 'ehlo';
    r = await cmd('EHLO client.test');
    if (r.code !== 250) return { stage, code: r.code, text: r.text };
    stage = 'mail';
    r = await cmd(`MAIL FROM:<${envelope.from}>`);
    if (r.code !== 250) return { stage, code: r.code, text: r.text };
    stage = 'rcpt';
    for (const rcpt of envelope.to) {
      r = await cmd(`RCPT TO:<${rcpt}>`);
      if (r.code !== 250) return { stage, code: r.code, text: r.text };
    }
    stage = 'data-cmd';
    r = await cmd('DATA');
    if (r.code !== 354) return { stage, code: r.code, text: r.text };
    stage = 'data';
    t.send(dataBytes(message));
    r = await read();
    t.send('QUIT\r\n');
    return { stage, code: r.code, text: r.text };
  } catch (err) {
    return { stage, broken: err instanceof Error ? err.message : String(err) };
  } finally {
    talk?.end();
  }
}

/** A request to a node's admin port with the bearer token. */
export async function adminApi(
  port: number,
  token: string,
  path: string,
  init: { readonly method?: 'GET' | 'POST' | 'DELETE'; readonly body?: unknown } = {},
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      authorization: `Bearer ${token}`,
      ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    // not JSON: kept as text
  }
  return { status: res.status, body };
}

/** GET /readyz on a node's admin port: the status code, or 0 when nothing answered. */
export async function readyz(port: number): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(10_000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** Polls `check` every 25 ms until it holds; throws naming `what` (and `detail()`) after `ms`. */
export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  ms = 30_000,
  detail: () => string = () => '',
): Promise<void> {
  const giveUp = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > giveUp) throw new Error(`timed out waiting for ${what} ${detail()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Polls /readyz of every port until each answers `status`; names the last answers on a timeout.
 * `guard` runs before each poll and may throw (a node that died).
 */
export async function untilReady(
  ports: readonly number[],
  status: 200 | 503,
  guard: () => void = () => undefined,
  ms = 30_000,
): Promise<void> {
  let last: number[] = [];
  await until(
    `/readyz ${status} on ${ports.join(', ')}`,
    async () => {
      guard();
      last = await Promise.all(ports.map(readyz));
      return last.every((s) => s === status);
    },
    ms,
    () => `(last: ${last.join(', ')})`,
  );
}
