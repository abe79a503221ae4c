import type { Readable } from 'node:stream';
import type { ClamdConfig } from '../../config/clamd.js';
import { SandgateError } from '../../core/errors.js';
import { silentLogger, type Logger } from '../../core/logger.js';
import type { MessageSource } from '../../core/message.js';
import { failedFinding as failed, type Finding } from '../../core/outcome.js';
import { cpuOf, type ScanContext, type Scanner } from '../../core/scanner.js';
import { clamdExchange, type ExchangeResult } from './connection.js';
import { scanEachPart, type PartWalk } from '../parts.js';
import { ClamdPool, type PoolMember, type PoolStatus } from './pool.js';
import { parseInstreamReply, printable } from './protocol.js';

export interface ClamdScannerOptions {
  readonly config: ClamdConfig;
  readonly log?: Logger;
  /** Needed for granularity 'parts': where decoded parts are spooled, and the walker's bomb limits. */
  readonly walk?: PartWalk;
  /** Clock for the pool's health bookkeeping (tests). */
  readonly now?: () => number;
}

/**
 * clamd behind the Scanner port: INSTREAM over TCP or a unix socket, to the first healthy
 * address (failover) or the next one (round robin). Every error is a failed finding with its own
 * reason; only `stream: OK` is clean and only `... FOUND` is malicious.
 */
export class ClamdScanner implements Scanner {
  readonly name = 'clamd';
  readonly backgroundMs = 0;
  readonly cleanTtlCapMs: number;
  private readonly pool: ClamdPool;
  private readonly log: Logger;

  constructor(private readonly options: ClamdScannerOptions) {
    const c = options.config;
    if (c.granularity === 'parts' && options.walk === undefined) {
      throw new SandgateError(
        'ERR_CONFIG_INVALID',
        'clamd granularity "parts" needs a spool directory and walk limits',
        {
          details: { path: 'scanners.clamd.granularity' },
        },
      );
    }
    this.log = (options.log ?? silentLogger).child({ scanner: 'clamd' });
    this.cleanTtlCapMs = c.cleanTtlCap;
    this.pool = new ClamdPool(c.addresses, {
      strategy: c.strategy,
      healthIntervalMs: c.healthInterval,
      connectTimeoutMs: c.connectTimeout,
      log: this.log,
      ...(options.now ? { now: options.now } : {}),
    });
    this.pool.start();
  }

  /**
   * The granularity: what changes how clamd is asked. The engine and signature versions are not in
   * the cache key (see version()): a cached verdict outlives a signature update for at most
   * cleanTtlCap (clean) or the cache TTLs.
   */
  fingerprint(): Promise<string> {
    return Promise.resolve(`clamd;${this.options.config.granularity}`);
  }

  /** clamd's VERSION answers (engine/database/date) of the addresses that are up, sorted, joined by |. */
  async version(signal: AbortSignal): Promise<string> {
    const versions = await this.pool.versions(signal);
    if (signal.aborted) {
      throw new SandgateError('ERR_SCANNER_TIMEOUT', 'clamd did not answer VERSION in time', {
        cause: signal.reason,
      });
    }
    if (versions.length === 0) {
      throw new SandgateError('ERR_SCANNER_UNAVAILABLE', 'no clamd address answered VERSION', {
        details: { addresses: this.pool.members.length },
      });
    }
    return versions.join('|');
  }

  /**
   * clamd does its analysis on CPU that is usually this host's: the whole scan holds one of the
   * scan service's CPU slots, so scan.concurrency bounds the streams sent to clamd at once.
   */
  scan(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    return cpuOf(ctx).run(() => {
      if (this.options.config.granularity === 'parts') return this.scanParts(message, ctx);
      return this.scanStream(() => message.open(), message.size, ctx, 'message');
    });
  }

  /** Health of every address (for status pages and tests). */
  status(): PoolStatus[] {
    return this.pool.status();
  }

  /** PINGs every address now. */
  checkHealth(): Promise<void> {
    return this.pool.checkHealth();
  }

  close(): Promise<void> {
    this.pool.close();
    return Promise.resolve();
  }

  /** One INSTREAM with failover: connection failures move on to the next address, anything else is final. */
  private async scanStream(
    open: () => Readable,
    size: number,
    ctx: ScanContext,
    what: string,
  ): Promise<Finding> {
    const c = this.options.config;
    if (size > c.streamMaxLength) {
      return failed(
        'too-large',
        `${what} is ${size} bytes, above clamd streamMaxLength ${c.streamMaxLength}`,
      );
    }
    const deadline = Math.min(ctx.deadline, ctx.now() + c.timeout);
    const refused: string[] = [];
    for (const member of this.pool.order()) {
      if (ctx.signal.aborted) return failed('timeout', 'aborted before clamd answered');
      if (ctx.now() >= deadline)
        return failed('timeout', `no clamd answer within ${c.timeout} ms or the message deadline`);
      const r = await clamdExchange(
        member.address,
        { command: 'INSTREAM', open, size, chunkSize: c.chunkSize },
        { deadline, connectTimeoutMs: c.connectTimeout, signal: ctx.signal, now: ctx.now },
      );
      if (r.kind === 'connect-failed') {
        this.pool.markDown(member, r.code);
        refused.push(`${member.label}: ${r.code}`);
        continue;
      }
      const finding = this.toFinding(r, member);
      ctx.log.debug(
        { event: 'clamd.scanned', address: member.label, what, bytes: size, outcome: finding.kind },
        'clamd answered',
      );
      return finding;
    }
    return failed('unavailable', `no clamd address accepted a connection (${refused.join('; ')})`);
  }

  private toFinding(r: Exclude<ExchangeResult, { kind: 'connect-failed' }>, member: PoolMember): Finding {
    const details = { address: member.label };
    switch (r.kind) {
      case 'timeout':
        return failed('timeout', `clamd at ${member.label} did not answer in time (${r.phase})`, details);
      case 'aborted':
        return failed('timeout', `aborted while waiting for clamd at ${member.label}`, details);
      case 'source-failed':
        return failed('internal', `could not read the content to send to clamd: ${r.error.message}`, details);
      case 'oversized-reply':
        this.pool.markUp(member);
        return failed('protocol', `clamd reply too long: "${printable(r.partial)}"`, details);
      case 'closed':
        this.pool.markUp(member);
        return failed(
          'protocol',
          `clamd at ${member.label} closed the connection after ${r.bytesSent} bytes without a complete reply (${r.code})`,
          details,
        );
      case 'reply': {
        this.pool.markUp(member);
        const reply = parseInstreamReply(r.text);
        switch (reply.kind) {
          case 'ok':
            // An OK before we sent the end marker would leave content unscanned: never clean.
            return r.early
              ? failed('protocol', 'clamd answered OK before the end of the stream', details)
              : { kind: 'clean', details };
          case 'found':
            return { kind: 'malicious', threats: [reply.signature], details };
          case 'size-limit':
            return failed(
              'too-large',
              `clamd refused the stream after ${r.bytesSent} bytes: ${reply.text} (its StreamMaxLength is below our streamMaxLength)`,
              details,
            );
          case 'error':
            return failed('protocol', `clamd error: ${printable(reply.text)}`, details);
          case 'garbage':
            return failed('protocol', `clamd reply not understood: "${reply.text}"`, details);
        }
      }
    }
  }

  /** Granularity 'parts' (src/sandbox/parts.ts): each decoded MIME leaf to clamd on its own. */
  private scanParts(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    return scanEachPart(message, ctx, {
      name: 'clamd',
      fallbackEvent: { event: 'clamd.parts_fallback' },
      walk: this.options.walk as PartWalk,
      scanPart: (part) => this.scanStream(() => part.open(), part.size, ctx, `part ${part.path}`),
      scanWhole: () => this.scanStream(() => message.open(), message.size, ctx, 'message'),
    });
  }
}

export function createClamdScanner(options: ClamdScannerOptions): ClamdScanner {
  return new ClamdScanner(options);
}
