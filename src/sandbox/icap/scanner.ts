import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { IcapConfig } from '../../config/icap.js';
import { SandgateError } from '../../core/errors.js';
import { silentLogger, type Logger } from '../../core/logger.js';
import type { MessageSource } from '../../core/message.js';
import { scanEachPart, type PartWalk } from '../parts.js';
import { failedFinding as failed, type FailureReason, type Finding } from '../../core/outcome.js';
import type { ScanContext, Scanner } from '../../core/scanner.js';
import type { TlsSettings } from './connection.js';
import { IcapPool, type IcapServer, type OptionsResult, type ServerStatus } from './pool.js';
import { buildModRequest, transferMode, type IcapMethod, type IcapOptions } from './protocol.js';
import { mapExchange } from './verdict.js';

export interface IcapScannerOptions {
  readonly config: IcapConfig;
  readonly log?: Logger;
  /** Needed for granularity 'parts': where decoded parts are spooled, and the walker's bomb limits. */
  readonly walk?: PartWalk;
  /** CA for icaps:// servers (read from tls.caFile by the caller). */
  readonly ca?: Buffer;
  readonly now?: () => number;
}

/** One object to send: the whole message or one decoded part. */
export interface IcapObject {
  readonly open: () => Readable;
  readonly size: number;
  /** File name shown to the service (its extension picks the Transfer-* rule). */
  readonly name: string;
  readonly contentType: string;
  /** For messages and logs: "message" or "part 2.1". */
  readonly what: string;
}

/**
 * An ICAP antivirus or sandbox service behind the Scanner port (docs/icap.md): RESPMOD (or
 * REQMOD) with a preview when the service offers one, over kept-alive connections, to the first
 * healthy server (failover) or the next one (round robin). Only a 204 or an unchanged echo is
 * clean; src/sandbox/icap/verdict.ts says what every other answer becomes.
 */
export class IcapScanner implements Scanner {
  readonly name = 'icap';
  readonly backgroundMs = 0;
  readonly cleanTtlCapMs: number;
  private readonly pool: IcapPool;
  private readonly settings: string;
  private readonly now: () => number;

  constructor(private readonly options: IcapScannerOptions) {
    const c = options.config;
    if (c.granularity === 'parts' && options.walk === undefined) {
      throw new SandgateError(
        'ERR_CONFIG_INVALID',
        'icap granularity "parts" needs a spool directory and walk limits',
        {
          details: { path: 'scanners.icap.granularity' },
        },
      );
    }
    this.now = options.now ?? Date.now;
    this.cleanTtlCapMs = c.cleanTtlCap;
    const log = (options.log ?? silentLogger).child({ scanner: 'icap' });
    const tls: TlsSettings = {
      rejectUnauthorized: !c.tls.insecureSkipVerify,
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
    };
    this.pool = new IcapPool(
      c.servers.map((s) => s),
      {
        strategy: c.strategy,
        maxConnections: c.maxConnections,
        keepAliveMs: c.keepAlive,
        healthIntervalMs: c.healthInterval,
        healthTimeoutMs: Math.min(c.timeout, c.connectTimeout + 5000),
        connectTimeoutMs: c.connectTimeout,
        tls,
        log,
        now: this.now,
      },
    );
    // What changes the answer for the same content: where it goes, how, and what counts as infected.
    // The ISTag is not here: it is the scanner's version (see version()).
    this.settings = createHash('sha256')
      .update(
        JSON.stringify({
          servers: c.servers.map((s) => s.label),
          method: c.method,
          granularity: c.granularity,
          maxObjectSize: c.maxObjectSize,
          preview: c.preview,
          infectionHeaders: [...c.infectionHeaders].sort(),
        }),
      )
      .digest('hex')
      .slice(0, 16);
    this.pool.start();
  }

  /** Identity and settings only (servers, service, method, granularity, limits, header list), never the ISTag. */
  fingerprint(): Promise<string> {
    return Promise.resolve(`icap;${this.options.config.granularity};${this.settings}`);
  }

  /**
   * The service's version: the ISTag from OPTIONS (held while Options-TTL lasts, asked again when
   * a response carries another), of every server that is up, sorted and joined by "|". Throws
   * ERR_SCANNER_UNAVAILABLE when no server answers.
   */
  async version(signal: AbortSignal): Promise<string> {
    const deadline = this.now() + this.options.config.timeout;
    const tags = await this.pool.istags(signal, deadline);
    if (tags.length === 0) {
      throw new SandgateError('ERR_SCANNER_UNAVAILABLE', 'no ICAP server answered OPTIONS', {
        details: { servers: this.pool.servers.length },
      });
    }
    return tags.join('|');
  }

  async scan(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    if (this.options.config.granularity === 'parts') return this.scanParts(message, ctx);
    return this.scanWhole(message, ctx);
  }

  /** Health of every server (status pages, tests, `sandgate icap health`). */
  status(): ServerStatus[] {
    return this.pool.status();
  }

  get servers(): readonly IcapServer[] {
    return this.pool.servers;
  }

  /** OPTIONS of one server, fresh. */
  serverOptions(server: IcapServer, signal?: AbortSignal): Promise<OptionsResult> {
    const deadline = this.now() + this.options.config.timeout;
    return this.pool.options(server, { deadline, force: true, ...(signal !== undefined ? { signal } : {}) });
  }

  /** OPTIONS to every server now. */
  checkHealth(): Promise<void> {
    return this.pool.checkHealth();
  }

  close(): Promise<void> {
    this.pool.close();
    return Promise.resolve();
  }

  /**
   * One object to the servers in order. A server that cannot be reached, answers 5xx, closes
   * without an answer, or whose OPTIONS answer is unusable makes way for the next; any other
   * answer is final. `only` limits the call to one server (health probes).
   */
  async scanObject(obj: IcapObject, ctx: ScanContext, only?: IcapServer): Promise<Finding> {
    const c = this.options.config;
    // c-icap's sense of MaxObjectSize: an object of that size or larger is not scanned.
    if (obj.size >= c.maxObjectSize) {
      return failed(
        'too-large',
        `${obj.what} is ${obj.size} bytes, not below scanners.icap.maxObjectSize ${c.maxObjectSize}`,
      );
    }
    const deadline = Math.min(ctx.deadline, ctx.now() + c.timeout);
    const problems: string[] = [];
    let reason: FailureReason = 'unavailable';
    for (const server of only !== undefined ? [only] : this.pool.order()) {
      if (ctx.signal.aborted) return failed('timeout', 'aborted before the ICAP server answered');
      if (ctx.now() >= deadline) {
        return failed('timeout', `no ICAP answer within ${c.timeout} ms or the message deadline`);
      }
      const opt = await this.pool.options(server, { deadline, signal: ctx.signal });
      if (opt.kind === 'timeout' || opt.kind === 'aborted') {
        return failed('timeout', `${server.label} did not answer OPTIONS in time`, { server: server.label });
      }
      if (opt.kind === 'unreachable') {
        problems.push(`${server.label}: ${opt.code}`);
        continue;
      }
      if (opt.kind === 'failed') {
        problems.push(`${server.label}: ${opt.message}`);
        if (opt.reason === 'protocol') reason = 'protocol';
        continue;
      }
      const method = chooseMethod(c.method, opt.options);
      if (method === undefined) {
        problems.push(
          `${server.label}: the service offers neither RESPMOD nor REQMOD as configured (Methods: ${opt.options.methods.join(', ')})`,
        );
        reason = 'protocol';
        continue;
      }
      const preview =
        c.preview && opt.options.preview !== undefined && transferMode(opt.options, obj.name) === 'preview'
          ? Math.min(opt.options.preview, obj.size)
          : undefined;
      const head = buildModRequest({
        method,
        service: server.url,
        size: obj.size,
        name: obj.name,
        contentType: obj.contentType,
        ...(preview !== undefined ? { preview } : {}),
      });
      const ex = await this.pool.exchange(
        server,
        { head, body: { open: obj.open, size: obj.size, ...(preview !== undefined ? { preview } : {}) } },
        { deadline, signal: ctx.signal, now: ctx.now },
      );
      if (ex.kind === 'connect-failed') {
        this.pool.markDown(server, `connect: ${ex.code}`);
        problems.push(`${server.label}: ${ex.code}`);
        continue;
      }
      if (ex.kind === 'timeout' || ex.kind === 'aborted') {
        return failed('timeout', `no connection to ${server.label} in time`, { server: server.label });
      }
      const r = ex.result;
      const istag = this.pool.noteIstag(server, r.head?.headers.get('ISTag'));
      if (r.received > 0) this.pool.markUp(server);
      const mapped = mapExchange({
        result: r,
        method,
        size: obj.size,
        infectionHeaders: c.infectionHeaders,
        details: { server: server.label, ...(istag !== undefined ? { istag } : {}) },
      });
      ctx.log.debug(
        {
          event: 'icap.scanned',
          server: server.label,
          what: obj.what,
          bytes: obj.size,
          status: r.head?.status,
          preview,
          outcome: mapped.kind === 'finding' ? mapped.finding.kind : 'next-server',
        },
        'ICAP server answered',
      );
      if (mapped.kind === 'next-server') {
        this.pool.markDown(server, mapped.message);
        problems.push(`${server.label}: ${mapped.message}`);
        continue;
      }
      return mapped.finding;
    }
    return failed(reason, `no ICAP server gave an answer (${problems.join('; ')})`);
  }

  /**
   * Granularity 'parts' (src/sandbox/parts.ts): each decoded MIME leaf to the service on its own,
   * with its name and type; the message keeps the parts' ISTag when they agree.
   */
  private scanParts(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    return scanEachPart(message, ctx, {
      name: 'icap',
      fallbackEvent: { event: 'icap.parts_fallback' },
      walk: this.options.walk as PartWalk,
      agreedDetail: 'istag',
      scanPart: (part) =>
        this.scanObject(
          {
            open: () => part.open(),
            size: part.size,
            name: part.filename ?? `part-${part.path}`,
            contentType: part.contentType,
            what: `part ${part.path}`,
          },
          ctx,
        ),
      scanWhole: () => this.scanWhole(message, ctx),
    });
  }

  private scanWhole(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    return this.scanObject(
      {
        open: () => message.open(),
        size: message.size,
        name: `${message.msgId}.eml`,
        contentType: 'message/rfc822',
        what: 'message',
      },
      ctx,
    );
  }
}

/** RESPMOD or REQMOD as configured: auto takes RESPMOD when the service lists it, else REQMOD. */
export function chooseMethod(setting: IcapConfig['method'], options: IcapOptions): IcapMethod | undefined {
  const offers = (m: IcapMethod): boolean => options.methods.includes(m);
  switch (setting) {
    case 'respmod':
      return offers('RESPMOD') ? 'RESPMOD' : undefined;
    case 'reqmod':
      return offers('REQMOD') ? 'REQMOD' : undefined;
    case 'auto':
      return offers('RESPMOD') ? 'RESPMOD' : offers('REQMOD') ? 'REQMOD' : undefined;
  }
}
