/**
 * The milter listener: inet:host:port or a unix socket (mode and owner set after bind), one
 * MilterSession per MTA connection, a connection cap, and graceful shutdown: stop accepting,
 * answer MAIL with 421, let verdicts in flight finish within milter.shutdownTimeout, answer the
 * rest 451, then close every connection.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, chownSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { MilterConfig, MilterListen } from '../config/milter.js';
import type { Evaluator } from '../core/evaluation.js';
import type { Logger } from '../core/logger.js';
import { MilterSession, type MilterSummary, type SessionContext } from './session.js';

export interface MilterServerOptions {
  readonly milter: MilterConfig;
  readonly evaluator: Evaluator;
  readonly log: Logger;
  readonly spoolDir: string;
  readonly maxMessageSize: number;
  readonly memorySpoolThreshold: number;
  readonly now?: () => number;
  /** PROGRESS interval while a verdict is pending (default 30 s; tests shorten it). */
  readonly progressIntervalMs?: number;
  /** Largest packet accepted (default codec MAX_PACKET; tests shrink it). */
  readonly maxPacket?: number;
}

export interface MilterStats {
  connections: number;
  messages: number;
}

export class MilterServer extends EventEmitter<{ message: [MilterSummary] }> {
  readonly stats: MilterStats = { connections: 0, messages: 0 };
  private readonly server: net.Server;
  private readonly sessions = new Set<MilterSession>();
  private readonly ctx: SessionContext;
  private nextId = 0;
  private closing: Promise<void> | undefined;
  private stopping = false;
  private unixPath: string | undefined;

  constructor(private readonly options: MilterServerOptions) {
    super();
    const m = options.milter;
    const now = options.now ?? Date.now;
    this.ctx = {
      evaluator: options.evaluator,
      log: options.log,
      spoolDir: options.spoolDir,
      memorySpoolThreshold: options.memorySpoolThreshold,
      maxMessageSize: options.maxMessageSize,
      maxReceived: m.maxReceived,
      deadlineMs: m.deadline,
      rejectText: m.rejectText,
      progressIntervalMs: options.progressIntervalMs ?? 30_000,
      ...(options.maxPacket !== undefined ? { maxPacket: options.maxPacket } : {}),
      now,
      refuseMail: (session) => this.refuseMail(session),
      onMessage: (summary) => {
        this.stats.messages++;
        this.emit('message', summary);
      },
      transactionEnded: () => this.idleCheck?.(),
    };
    this.server = net.createServer((socket) => this.onConnection(socket));
  }

  /** Starts listening; resolves with where (port 0 picks a free port). */
  async listen(where: MilterListen = this.options.milter.listen): Promise<MilterListen> {
    if (where.kind === 'unix') await removeStaleSocket(where.path);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      const done = () => {
        this.server.off('error', reject);
        resolve();
      };
      if (where.kind === 'unix') this.server.listen(where.path, done);
      else this.server.listen(where.port, where.host, done);
    });
    let bound: MilterListen;
    if (where.kind === 'unix') {
      this.unixPath = where.path;
      chmodSync(where.path, this.options.milter.socketMode);
      if (this.options.milter.socketOwner !== undefined) {
        const { uid, gid } = resolveOwner(this.options.milter.socketOwner);
        chownSync(where.path, uid, gid);
      }
      bound = where;
    } else {
      const a = this.server.address() as net.AddressInfo;
      bound = { kind: 'inet', host: a.address, port: a.port };
    }
    this.options.log.info(
      {
        event: 'milter.listening',
        ...(bound.kind === 'unix' ? { socket: bound.path } : { host: bound.host, port: bound.port }),
      },
      'milter listening',
    );
    return bound;
  }

  /** Connections open now. */
  get openConnections(): number {
    return this.sessions.size;
  }

  /**
   * Graceful shutdown: no new connections; MAIL is answered 421 from now on; verdicts in flight
   * get milter.shutdownTimeout to finish, then 451; then every connection is closed (the MTA
   * applies milter_default_action to whatever it sends after that: tempfail).
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true;
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      await this.transactionsDone(this.options.milter.shutdownTimeout);
      for (const s of this.sessions) s.forceTempfail();
      // After the forced answers were written (they are sent a few microtasks from now).
      await new Promise((r) => setImmediate(r));
      for (const s of this.sessions) s.close();
      await closed;
      if (this.unixPath !== undefined) {
        try {
          unlinkSync(this.unixPath);
        } catch {
          // Node removed it already.
        }
      }
    })();
    return this.closing;
  }

  /** Resolves when no session is in a transaction, or after `timeoutMs`. */
  private transactionsDone(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(finish, timeoutMs);
      function finish() {
        clearTimeout(timer);
        resolve();
      }
      this.idleCheck = () => {
        if (![...this.sessions].some((s) => s.inTransaction && !s.closed)) finish();
      };
      this.idleCheck();
    });
  }

  /** Set while shutting down: called whenever a transaction ends or a connection closes. */
  private idleCheck: (() => void) | undefined;

  private refuseMail(session: MilterSession): 'shutting-down' | 'too-many' | undefined {
    if (this.stopping) return 'shutting-down';
    if (this.overCap.has(session)) return 'too-many';
    return undefined;
  }

  private readonly overCap = new WeakSet<MilterSession>();

  private onConnection(socket: net.Socket): void {
    const id = `m${(this.nextId++).toString(36)}`;
    const session = new MilterSession(id, socket, this.ctx);
    if (this.sessions.size >= this.options.milter.maxConnections) {
      this.overCap.add(session);
      this.options.log.warn(
        { event: 'milter.too_many', cid: id, limit: this.options.milter.maxConnections },
        'milter.maxConnections reached; this session gets 421 at MAIL',
      );
    }
    this.sessions.add(session);
    this.stats.connections++;
    socket.once('close', () => {
      this.sessions.delete(session);
      this.idleCheck?.();
    });
  }
}

/** A unix socket left by a process that died is removed; one that answers is in use. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`milter.listen: ${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`milter.listen: another process listens on ${path}`);
  unlinkSync(path);
}

/** "user:group", "user" or ":group", by name (from /etc/passwd and /etc/group) or by number. */
export function resolveOwner(spec: string, files = { passwd: '/etc/passwd', group: '/etc/group' }) {
  const [user = '', group = ''] = spec.split(':');
  const lookup = (file: string, name: string, what: string): number => {
    if (/^\d+$/.test(name)) return Number(name);
    const line = readFileSync(file, 'utf8')
      .split('\n')
      .find((l) => l.split(':')[0] === name);
    const id = line?.split(':')[2];
    if (id === undefined || !/^\d+$/.test(id))
      throw new Error(`milter.socketOwner: no ${what} "${name}" in ${file}`);
    return Number(id);
  };
  return {
    uid: user === '' ? -1 : lookup(files.passwd, user, 'user'),
    gid: group === '' ? -1 : lookup(files.group, group, 'group'),
  };
}
