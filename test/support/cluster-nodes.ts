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
 *   await cluster.stop();                                     // every node, then
 *   await db.drop();
 *
 * `config` (on the cluster and per node) is merged into the generated config, e.g. to turn on the
 * admin port or to change leases.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { CgpBase, CgpHelper } from './cgp.js';
import { startRelayProcess, type RelayProcess } from './relay-process.js';
import { SmtpTalk, type TalkReply } from './smtp-talk.js';
import type { TestPostgres } from './postgres.js';

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
  /** Drops the database, ending every session still on it. */
  drop(): Promise<void>;
}

let databases = 0;

/** A fresh, empty database on `server` for one test: its own pg_stat_activity rows, its own schema. */
export async function createClusterDatabase(server: TestPostgres): Promise<ClusterDatabase> {
  const name = `sg_cluster_${process.pid}_${++databases}`;
  const admin = await server.admin();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
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
    async drop() {
      const c = await server.admin();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export interface ClusterOptions {
  /** A temporary directory for the nodes' config files, state directories, logs and keys. */
  readonly dir: string;
  readonly stateUrl: string;
  /** The PT Sandbox (fake) every node uses, with the one token they share. */
  readonly ptSandbox?: { readonly url: string; readonly token: string };
  /** The relays' next hop: an SMTP sink on 127.0.0.1. */
  readonly nextHopPort?: number;
  /** Merged into every node's config. */
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
  stop(): Promise<void>;
}

/** Several nodes on one state; every node started here is stopped by stop(). */
export class Cluster {
  readonly markKeyFile: string;
  readonly tokenFile: string | undefined;
  private readonly nodes: Array<RelayNode | HelperNode> = [];

  constructor(private readonly options: ClusterOptions) {
    // Every node signs X-Sandgate-Mark with the same key (docs/cluster.md): one file for all.
    this.markKeyFile = join(options.dir, 'mark.key');
    writeFileSync(this.markKeyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    if (options.ptSandbox !== undefined) {
      this.tokenFile = join(options.dir, 'pt.token');
      writeFileSync(this.tokenFile, options.ptSandbox.token, { mode: 0o600 });
    }
  }

  /** The config of node `name` (before it is written). */
  nodeConfig(name: string, extra?: ConfigObject): ConfigObject {
    const o = this.options;
    const base: ConfigObject = {
      stateDir: join(o.dir, `${name}-state`),
      state: { url: o.stateUrl, tls: 'disable' },
      headers: { markKeyFile: this.markKeyFile },
      scan: { chain: o.ptSandbox !== undefined ? ['rules', 'pt-sandbox'] : ['rules'] },
      relay: {
        listen: '127.0.0.1:0',
        ...(o.nextHopPort !== undefined ? { nextHop: `smtp://127.0.0.1:${o.nextHopPort}` } : {}),
        shutdownTimeout: '2s',
      },
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
    return mergeConfig(mergeConfig(base, o.config), extra);
  }

  private writeConfig(name: string, config: ConfigObject): string {
    const file = join(this.options.dir, `${name}.yaml`);
    // JSON is YAML.
    writeFileSync(file, JSON.stringify(config));
    return file;
  }

  /** Starts `sandgate relay` as node `name`; resolves once it listens (and its admin port, with `withAdmin`). */
  async startRelay(name: string, extra?: ConfigObject, withAdmin = false): Promise<RelayNode> {
    const configFile = this.writeConfig(name, this.nodeConfig(name, extra));
    const p = await startRelayProcess(configFile, withAdmin);
    const exited = new Promise<void>((resolve) => {
      if (p.child.exitCode !== null || p.child.signalCode !== null) resolve();
      else p.child.once('exit', () => resolve());
    });
    const kill = async (signal: NodeJS.Signals): Promise<void> => {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
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
      kill9: () => kill('SIGKILL'),
      async stop(graceMs = 10_000) {
        if (p.child.exitCode !== null || p.child.signalCode !== null) return;
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
  startHelper(name: string, extra?: ConfigObject): HelperNode {
    const base = new CgpBase(`sg-cluster-${name}-`);
    const logFile = join(this.options.dir, `${name}.log`);
    const config = this.nodeConfig(name, mergeConfig({ log: { file: logFile, level: 'info' } }, extra));
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

  /** Stops every node still running (relays by SIGTERM, the helper by the end of its input). */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.splice(0).map((n) => n.stop()));
  }
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

/** One message for smtpSession(): the envelope and the raw bytes (CRLF line ends). */
export interface OutgoingMessage {
  readonly from: string;
  readonly to: readonly string[];
  readonly raw: string;
}

/**
 * Sends `messages` one after the other in one SMTP session, like an MTA delivering a queue run,
 * and returns the final reply of each (after the dot; the refusal when MAIL or RCPT was refused).
 * A session the server closes ends with code 0 for the messages it did not answer.
 */
export async function smtpSession(port: number, messages: readonly OutgoingMessage[]): Promise<TalkReply[]> {
  const replies: TalkReply[] = [];
  const t = await SmtpTalk.open(port);
  const closed: TalkReply = { code: 0, text: 'connection closed' };
  const read = () => t.read().catch(() => closed);
  const cmd = async (line: string): Promise<TalkReply> => {
    t.send(`${line}\r\n`);
    return read();
  };
  try {
    if ((await read()).code !== 220) throw new Error('no 220 greeting');
    if ((await cmd('EHLO mta.example.test')).code !== 250) throw new Error('EHLO refused');
    for (const m of messages) {
      const mail = await cmd(`MAIL FROM:<${m.from}>`);
      if (mail.code !== 250) {
        replies.push(mail);
        if (mail.code === 0) break;
        continue;
      }
      let refused: TalkReply | undefined;
      for (const r of m.to) {
        const rcpt = await cmd(`RCPT TO:<${r}>`);
        if (rcpt.code !== 250) refused ??= rcpt;
      }
      if (refused !== undefined) {
        replies.push(refused);
        await cmd('RSET');
        continue;
      }
      const data = await cmd('DATA');
      if (data.code !== 354) {
        replies.push(data);
        if (data.code === 0) break;
        continue;
      }
      const body = m.raw.endsWith('\r\n') ? m.raw : `${m.raw}\r\n`;
      t.send(`${body.replace(/^\./gm, '..')}.\r\n`);
      const final = await read();
      replies.push(final);
      if (final.code === 0) break;
    }
    if (!t.closed) await cmd('QUIT');
  } finally {
    t.end();
  }
  while (replies.length < messages.length) replies.push(closed);
  return replies;
}
