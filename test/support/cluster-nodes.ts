/**
 * Nodes of a sandgate cluster as real processes on one PostgreSQL state: `sandgate relay` and
 * `sandgate helper` started from the built CLI, each with a config file of its own (its own
 * stateDir, log and spool) and the things a cluster shares (state.url, the X-Sandgate-Mark key
 * file, the PT Sandbox token).
 *
 *   const db = await createClusterDatabase(server);          // a fresh database on the test server
 *   const cluster = new Cluster({ dir, stateUrl: db.url, ptSandbox: { url: sb.url, token }, nextHopPort: sink.port });
 *   const a = await cluster.startRelay('a');                  // a.relayPort, a.records (its JSON log lines)
 *   const h = cluster.startHelper('h');                       // h.cgp (CgpHelper), h.events()
 *   await smtpSession(a.relayPort, [m1, m2]);                 // the fate of each message
 *   await cluster.stop();                                     // every node, then
 *   await db.drop();
 *
 * `config` (on the cluster and per node) is merged into the generated config, e.g. to change
 * leases; with `adminToken` every node runs its admin port (cluster.admin() calls it).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { CgpBase, CgpHelper } from './cgp.js';
import { startRelayProcess, type RelayProcess } from './relay-process.js';
import { SmtpTalk, type TalkReply } from './smtp-talk.js';
import { adminQuery, type TestPostgres } from './postgres.js';

export type ConfigObject = Record<string, unknown>;

/** Deep merge of plain objects: `over` wins; arrays and scalars are replaced. */
export function mergeConfig(base: ConfigObject, over: ConfigObject | undefined): ConfigObject {
  if (over === undefined) return base;
  const out: ConfigObject = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlain(b) && isPlain(v) ? mergeConfig(b, v) : v;
  }
  return out;
}

function isPlain(v: unknown): v is ConfigObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface ClusterDatabase {
  readonly name: string;
  /** postgres://user@host:port/name (trust authentication: no password). */
  readonly url: string;
  /** A client on this database, for set-up, assertions and pg_terminate_backend. */
  connect(): Promise<pg.Client>;
  /** One query on a connection of its own (connect(), query, end): the rows. */
  query<T extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Drops the database, ending every session still on it. */
  drop(): Promise<void>;
}

let databases = 0;

/** A fresh, empty database on `server` for one test: its own pg_stat_activity rows, its own schema. */
export async function createClusterDatabase(server: TestPostgres): Promise<ClusterDatabase> {
  const name = `sg_cluster_${process.pid}_${++databases}`;
  await adminQuery(server, `CREATE DATABASE ${name}`);
  const connect = async (): Promise<pg.Client> => {
    const c = new pg.Client({
      host: server.host,
      port: server.port,
      user: server.user,
      database: name,
      connectionTimeoutMillis: 10_000,
    });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  return {
    name,
    url: `postgres://${server.user}@${server.host}:${server.port}/${name}`,
    connect,
    async query<T extends Record<string, unknown>>(sql: string, params: unknown[] = []) {
      const c = await connect();
      try {
        return (await c.query<T>(sql, params)).rows;
      } finally {
        await c.end();
      }
    },
    drop: () => adminQuery(server, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

export interface ClusterOptions {
  /** A temporary directory for the nodes' config files, state directories, logs and keys. */
  readonly dir: string;
  readonly stateUrl: string;
  /** The PT Sandbox (fake) every node uses, with the one token they share. */
  readonly ptSandbox?: { readonly url: string; readonly token: string };
  /** The relays' next hop (and quarantine release target): an SMTP sink on 127.0.0.1. */
  readonly nextHopPort?: number;
  /** The admin API's bearer token: with it every node runs its admin port. */
  readonly adminToken?: string;
  /** Merged into every node's config. */
  readonly config?: ConfigObject;
}

/** What one node has of its own. */
export interface NodeOptions {
  /** This node's next hop (and release target) instead of the cluster's. */
  readonly nextHopPort?: number;
  /** Merged into this node's config (after the cluster's `config`). */
  readonly config?: ConfigObject;
}

export interface RelayNode {
  readonly name: string;
  readonly kind: 'relay';
  readonly process: RelayProcess;
  readonly pid: number;
  readonly relayPort: number;
  readonly adminPort?: number;
  readonly configFile: string;
  /** Its JSON log lines (the relay logs to stdout), still filling. */
  readonly records: Array<Record<string, unknown>>;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** true while the process runs. */
  alive(): boolean;
  /** kill -9, and wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM; SIGKILL when it has not ended within `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface HelperNode {
  readonly name: string;
  readonly kind: 'helper';
  readonly cgp: CgpHelper;
  /** CommuniGate's base directory (queue files go here: base.queueFile()). */
  readonly base: CgpBase;
  readonly configFile: string;
  readonly logFile: string;
  /** The JSON lines of its log file so far. */
  events(): Array<Record<string, unknown>>;
  /** true while the process runs. */
  alive(): boolean;
  stop(): Promise<void>;
}

/** Several nodes on one state; every node started here is stopped by stop(). */
export class Cluster {
  readonly markKeyFile: string;
  readonly tokenFile: string | undefined;
  readonly adminTokenFile: string | undefined;
  private readonly nodes: Array<RelayNode | HelperNode> = [];

  constructor(private readonly options: ClusterOptions) {
    // Every node signs X-Sandgate-Mark with the same key (docs/cluster.md): one file for all.
    this.markKeyFile = join(options.dir, 'mark.key');
    writeFileSync(this.markKeyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    if (options.ptSandbox !== undefined) {
      this.tokenFile = join(options.dir, 'pt.token');
      writeFileSync(this.tokenFile, options.ptSandbox.token, { mode: 0o600 });
    }
    if (options.adminToken !== undefined) {
      this.adminTokenFile = join(options.dir, 'admin.token');
      writeFileSync(this.adminTokenFile, `${options.adminToken}\n`, { mode: 0o600 });
    }
  }

  /** The config of node `name` (before it is written). */
  nodeConfig(name: string, node: NodeOptions = {}): ConfigObject {
    const o = this.options;
    const hopPort = node.nextHopPort ?? o.nextHopPort;
    const hop = hopPort !== undefined ? `smtp://127.0.0.1:${hopPort}` : undefined;
    const base: ConfigObject = {
      stateDir: join(o.dir, `${name}-state`),
      state: { url: o.stateUrl, tls: 'disable' },
      headers: { markKeyFile: this.markKeyFile },
      scan: { chain: o.ptSandbox !== undefined ? ['rules', 'pt-sandbox'] : ['rules'] },
      relay: {
        listen: '127.0.0.1:0',
        ...(hop !== undefined ? { nextHop: hop } : {}),
        shutdownTimeout: '2s',
      },
      ...(hop !== undefined ? { quarantine: { release: { target: hop } } } : {}),
      ...(this.adminTokenFile !== undefined
        ? { admin: { enabled: true, listen: '127.0.0.1:0', tokenFile: this.adminTokenFile } }
        : {}),
      ...(o.ptSandbox !== undefined
        ? {
            scanners: {
              ptSandbox: {
                url: o.ptSandbox.url,
                tokenFile: this.tokenFile,
                polling: { firstDelay: '50ms', interval: '200ms', slowInterval: '200ms' },
                retries: { attempts: 2, backoff: '50ms' },
              },
            },
          }
        : {}),
    };
    return mergeConfig(mergeConfig(base, o.config), node.config);
  }

  private writeConfig(name: string, config: ConfigObject): string {
    const file = join(this.options.dir, `${name}.yaml`);
    // JSON is YAML.
    writeFileSync(file, JSON.stringify(config));
    return file;
  }

  /** Starts `sandgate relay` as node `name`; resolves once it listens (and its admin port, when on). */
  async startRelay(name: string, own: NodeOptions = {}): Promise<RelayNode> {
    const config = this.nodeConfig(name, own);
    const configFile = this.writeConfig(name, config);
    const withAdmin = isPlain(config.admin) && config.admin.enabled === true;
    const p = await startRelayProcess(configFile, withAdmin, { captureStderr: true });
    const exited = new Promise<void>((resolve) => {
      if (p.child.exitCode !== null || p.child.signalCode !== null) resolve();
      else p.child.once('exit', () => resolve());
    });
    const alive = (): boolean => p.child.exitCode === null && p.child.signalCode === null;
    const kill = async (signal: NodeJS.Signals): Promise<void> => {
      if (alive()) p.child.kill(signal);
      await exited;
    };
    const node: RelayNode = {
      name,
      kind: 'relay',
      process: p,
      pid: p.child.pid ?? 0,
      relayPort: p.relayPort,
      ...(p.adminPort !== undefined ? { adminPort: p.adminPort } : {}),
      configFile,
      records: p.records,
      stderr: p.stderr,
      alive,
      kill9: () => kill('SIGKILL'),
      async stop(graceMs = 10_000) {
        if (!alive()) return;
        p.child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), graceMs)));
        const how = await Promise.race([exited, late]);
        clearTimeout(timer);
        if (how === 'late') await kill('SIGKILL');
      },
    };
    this.nodes.push(node);
    return node;
  }

  /** Starts `sandgate helper` as node `name` in a CommuniGate base directory of its own, logging to a file. */
  startHelper(name: string, own: NodeOptions = {}): HelperNode {
    const base = new CgpBase(`sg-cluster-${name}-`);
    const logFile = join(this.options.dir, `${name}.log`);
    const config = this.nodeConfig(name, {
      ...own,
      config: mergeConfig({ log: { file: logFile, level: 'info' } }, own.config),
    });
    const configFile = this.writeConfig(name, config);
    const cgp = CgpHelper.start({ base, config: configFile });
    const node: HelperNode = {
      name,
      kind: 'helper',
      cgp,
      base,
      configFile,
      logFile,
      events: () => readLog(logFile),
      alive: () => cgp.child.exitCode === null && cgp.child.signalCode === null,
      async stop() {
        try {
          if (cgp.child.exitCode === null && cgp.child.signalCode === null) {
            cgp.child.stdin.end();
            await cgp.waitExit(10_000).catch(() => undefined);
          }
        } finally {
          cgp.kill();
          await cgp.waitExit(10_000).catch(() => undefined);
          base.remove();
        }
      },
    };
    this.nodes.push(node);
    return node;
  }

  /** A request to `node`'s admin API with the cluster's bearer token. */
  admin(
    node: RelayNode,
    path: string,
    init: { readonly method?: 'GET' | 'POST' | 'DELETE'; readonly body?: unknown } = {},
  ): Promise<{ status: number; body: unknown }> {
    if (this.options.adminToken === undefined) throw new Error('the cluster has no adminToken');
    return adminApi(adminPort(node), this.options.adminToken, path, init);
  }

  /** Stops every node still running (relays by SIGTERM, the helper by the end of its input). */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.splice(0).map((n) => n.stop()));
  }
}

/** `node`'s admin port; throws when its admin API is off. */
export function adminPort(node: RelayNode): number {
  if (node.adminPort === undefined) throw new Error(`node ${node.name} runs no admin port`);
  return node.adminPort;
}

/** A request to an admin port with a bearer token; the body parsed when it is JSON. */
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

/** GET /readyz on an admin port: the status code, or 0 when nothing answered. */
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
  ms = 20_000,
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

/** The JSON lines of a log file (none while it does not exist). */
export function readLog(file: string): Array<Record<string, unknown>> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** One message for smtpSession(): the envelope and the bytes (line ends made CRLF when sent). */
export interface OutgoingMessage {
  readonly from: string;
  readonly to: readonly string[];
  readonly raw: string | Buffer;
}

/** What became of one message sent over SMTP. */
export interface SmtpFate {
  /** The reply to the final dot, or to the command that refused the message; 0 when none came. */
  readonly code: number;
  readonly text: string;
  /** Where it ended: 'data' (after the dot), or the command that was refused, or where the connection broke. */
  readonly stage: 'greeting' | 'ehlo' | 'mail' | 'rcpt' | 'data-cmd' | 'data';
  /** The connection went away (or did not answer within the timeout) before a reply. */
  readonly broken?: string;
}

/** Dot-stuffs a message with CRLF line ends for DATA. */
function dataBytes(message: string | Buffer): Buffer {
  const text = (typeof message === 'string' ? message : message.toString('latin1')).replace(/\r?\n/g, '\r\n');
  const stuffed = text.replace(/^\./gm, '..');
  return Buffer.from(`${stuffed}${stuffed.endsWith('\r\n') ? '' : '\r\n'}.\r\n`, 'latin1');
}

/**
 * Sends `messages` one after the other in one SMTP session, like an MTA delivering a queue run,
 * and returns the fate of each; never throws. A refused MAIL, RCPT or DATA ends that message (RSET)
 * and the session goes on with the next. A reply that does not come within `timeoutMs` counts as
 * a broken connection (the client gives up and keeps the message); once the connection is broken,
 * every message not answered yet has that fate (code 0).
 */
export async function smtpSession(
  port: number,
  messages: readonly OutgoingMessage[],
  timeoutMs = 30_000,
): Promise<SmtpFate[]> {
  const fates: SmtpFate[] = [];
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
    /** A refusal before the session starts ends every message. */
    const refuseAll = (r: TalkReply): SmtpFate[] =>
      messages.map(() => ({ stage, code: r.code, text: r.text }));
    let r = await read();
    if (r.code !== 220) return refuseAll(r);
    stage = 'ehlo';
    r = await cmd('EHLO mta.example.test');
    if (r.code !== 250) return refuseAll(r);
    for (const m of messages) {
      stage = 'mail';
      r = await cmd(`MAIL FROM:<${m.from}>`);
      let refused = r.code === 250 ? undefined : r;
      if (refused === undefined) {
        stage = 'rcpt';
        for (const rcpt of m.to) {
          r = await cmd(`RCPT TO:<${rcpt}>`);
          if (r.code !== 250) refused ??= r;
        }
      }
      if (refused === undefined) {
        stage = 'data-cmd';
        r = await cmd('DATA');
        if (r.code !== 354) refused = r;
      }
      if (refused !== undefined) {
        fates.push({ stage, code: refused.code, text: refused.text });
        await cmd('RSET');
        continue;
      }
      stage = 'data';
      t.send(dataBytes(m.raw));
      r = await read();
      fates.push({ stage, code: r.code, text: r.text });
    }
    await cmd('QUIT').catch(() => undefined);
  } catch (err) {
    const broken = err instanceof Error ? err.message : String(err);
    while (fates.length < messages.length) fates.push({ stage, code: 0, text: '', broken });
  } finally {
    talk?.end();
  }
  return fates;
}

/** Sends one message on a connection of its own (smtpSession with one message) and reports its fate. */
export async function smtpSend(
  port: number,
  envelope: { readonly from: string; readonly to: readonly string[] },
  message: string | Buffer,
  timeoutMs = 30_000,
): Promise<SmtpFate> {
  const [fate] = await smtpSession(port, [{ ...envelope, raw: message }], timeoutMs);
  return fate!;
}
