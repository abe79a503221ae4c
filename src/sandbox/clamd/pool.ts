import { formatClamdAddress, type ClamdAddress } from '../../config/clamd.js';
import type { Logger } from '../../core/logger.js';
import { clamdExchange } from './connection.js';
import { isPong, parseVersion } from './protocol.js';

/** One clamd instance as the pool sees it. */
export interface PoolMember {
  readonly address: ClamdAddress;
  /** Printable address for logs and error messages. */
  readonly label: string;
  up: boolean;
  /** A member that is down is tried again (before a health check brings it back) from this time on. */
  retryAt: number;
  /** The last VERSION answer and when it came. */
  version: string | undefined;
  versionAt: number;
  lastError: string | undefined;
}

export interface PoolStatus {
  readonly address: string;
  readonly up: boolean;
  readonly version?: string;
  readonly lastError?: string;
}

export interface ClamdPoolOptions {
  readonly strategy: 'failover' | 'round-robin';
  /** PING period, and how long a VERSION answer counts as fresh. 0: no background checks, no caching. */
  readonly healthIntervalMs: number;
  readonly connectTimeoutMs: number;
  readonly log: Logger;
  readonly now?: () => number;
}

/**
 * The configured clamd addresses with their health: the order to try them in for one call
 * (failover or round robin, healthy ones first), background PING checks, and the VERSION
 * answers that make up the scanner's fingerprint.
 */
export class ClamdPool {
  readonly members: readonly PoolMember[];
  private readonly now: () => number;
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private refreshing: Promise<void> | undefined;
  private closed = false;

  constructor(
    addresses: readonly ClamdAddress[],
    private readonly options: ClamdPoolOptions,
  ) {
    if (addresses.length === 0) throw new Error('ClamdPool needs at least one address');
    this.now = options.now ?? Date.now;
    this.members = addresses.map((address) => ({
      address,
      label: formatClamdAddress(address),
      up: true,
      retryAt: 0,
      version: undefined,
      versionAt: 0,
      lastError: undefined,
    }));
  }

  /** Starts the periodic PING checks (no-op when healthIntervalMs is 0). The timer does not keep the process alive. */
  start(): void {
    if (this.timer !== undefined || this.closed || this.options.healthIntervalMs <= 0) return;
    this.timer = setInterval(() => void this.checkHealth(), this.options.healthIntervalMs);
    this.timer.unref();
  }

  /**
   * The members to try for one call, in order: those that are up (or due for a retry) in
   * strategy order, then the rest as a last resort, so a pool that believes everything is down
   * still tries every address before giving up.
   */
  order(): PoolMember[] {
    const n = this.members.length;
    const start = this.options.strategy === 'round-robin' ? this.next++ % n : 0;
    if (this.next >= Number.MAX_SAFE_INTEGER) this.next = 0;
    const rotated = [...this.members.slice(start), ...this.members.slice(0, start)];
    const now = this.now();
    const usable = rotated.filter((m) => m.up || now >= m.retryAt);
    const rest = rotated.filter((m) => !(m.up || now >= m.retryAt));
    return [...usable, ...rest];
  }

  markUp(member: PoolMember): void {
    member.lastError = undefined;
    if (member.up) return;
    member.up = true;
    this.options.log.info(
      { event: 'clamd.address_up', address: member.label },
      'clamd address is answering again',
    );
  }

  markDown(member: PoolMember, reason: string): void {
    member.lastError = reason;
    member.retryAt = this.now() + this.options.healthIntervalMs;
    member.version = undefined;
    if (!member.up) return;
    member.up = false;
    this.options.log.warn(
      { event: 'clamd.address_down', address: member.label, reason },
      'clamd address is not answering; using the others',
    );
  }

  /** PINGs every member (and asks those that answer for VERSION). One check at a time. */
  checkHealth(): Promise<void> {
    this.checking ??= Promise.all(this.members.map((m) => this.checkMember(m))).then(
      () => {
        this.checking = undefined;
      },
      () => {
        this.checking = undefined;
      },
    );
    return this.checking;
  }

  /**
   * VERSION answers of the members that are up, sorted and unique. Asks again when an answer is
   * older than healthIntervalMs (always when it is 0). Empty when no member answers.
   */
  async versions(signal: AbortSignal): Promise<string[]> {
    if (!this.fresh()) {
      this.refreshing ??= Promise.all(this.members.map((m) => this.askVersion(m))).then(
        () => {
          this.refreshing = undefined;
        },
        () => {
          this.refreshing = undefined;
        },
      );
      await raceAbort(this.refreshing, signal);
    }
    const versions = this.members
      .filter((m) => m.up && m.version !== undefined)
      .map((m) => m.version as string);
    return [...new Set(versions)].sort();
  }

  status(): PoolStatus[] {
    return this.members.map((m) => ({
      address: m.label,
      up: m.up,
      ...(m.version !== undefined ? { version: m.version } : {}),
      ...(m.lastError !== undefined ? { lastError: m.lastError } : {}),
    }));
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** true when every member that is up has a VERSION answer younger than the health interval. */
  private fresh(): boolean {
    const interval = this.options.healthIntervalMs;
    if (interval <= 0) return false;
    const now = this.now();
    const up = this.members.filter((m) => m.up);
    return up.length > 0 && up.every((m) => m.version !== undefined && now - m.versionAt < interval);
  }

  private async checkMember(member: PoolMember): Promise<void> {
    const r = await clamdExchange(
      member.address,
      { command: 'PING' },
      {
        deadline: this.now() + this.options.connectTimeoutMs,
        connectTimeoutMs: this.options.connectTimeoutMs,
        now: this.now,
      },
    );
    if (r.kind === 'reply' && isPong(r.text)) {
      this.markUp(member);
      await this.askVersion(member);
    } else {
      this.markDown(member, r.kind === 'reply' ? 'PING answered without PONG' : describeFailure(r));
    }
  }

  private async askVersion(member: PoolMember): Promise<void> {
    const r = await clamdExchange(
      member.address,
      { command: 'VERSION' },
      {
        deadline: this.now() + this.options.connectTimeoutMs,
        connectTimeoutMs: this.options.connectTimeoutMs,
        now: this.now,
      },
    );
    const version = r.kind === 'reply' ? parseVersion(r.text) : undefined;
    if (version === undefined) {
      this.markDown(member, r.kind === 'reply' ? 'VERSION answer not understood' : describeFailure(r));
      return;
    }
    if (member.version !== undefined && member.version !== version) {
      this.options.log.info(
        { event: 'clamd.version_changed', address: member.label, from: member.version, to: version },
        'clamd engine or database version changed',
      );
    }
    member.version = version;
    member.versionAt = this.now();
    this.markUp(member);
  }
}

function describeFailure(r: { kind: string; code?: string; phase?: string }): string {
  if (r.code !== undefined) return `${r.kind}: ${r.code}`;
  return r.phase !== undefined ? `${r.kind} (${r.phase})` : r.kind;
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
