import { createHash } from 'node:crypto';
import type { z } from 'zod';
import type { rulesSchema } from '../../config/scanners.js';
import { isSandgateError, SandgateError } from '../../core/errors.js';
import type { MessageSource } from '../../core/message.js';
import type { AllowList } from '../../core/ports.js';
import { walkMessage, type AnomalyKind, type WalkedPart, type WalkSummary } from '../../mime/walker.js';
import type { Finding, FindingDetails } from '../../core/outcome.js';
import type { ScanContext, Scanner } from '../../core/scanner.js';
import {
  blockedExtension,
  doubleExtension,
  executableKind,
  isExecutableName,
  isOle,
  isOoxmlVbaProject,
  OLE_VBA_MARKER,
} from './file-types.js';
import { StreamSearch } from './stream-search.js';
import { EICAR, Threats } from './threats.js';

export type RulesSettings = z.output<typeof rulesSchema>;

/** Bump when a rule changes what it detects: it is part of the fingerprint, so cached verdicts expire. */
export const RULES_VERSION = 'sandgate-rules/2';

export interface RulesScannerOptions {
  /** Where parts larger than settings.memorySpoolThreshold are spooled while scanned. */
  readonly spoolDir: string;
  /** A shared allowlist of SHA-256 hashes (operator releases); its revision is part of the fingerprint. */
  readonly allowList?: Pick<AllowList, 'has' | 'revision'>;
}

interface Hit {
  readonly threat: string;
  readonly severity: 'malicious' | 'suspicious';
  readonly rule: string;
  readonly path: string;
}

/** What one scan gathered while walking a message. */
class ScanState {
  readonly hits: Hit[] = [];
  readonly allowed: string[] = [];
  encrypted: string | undefined;
  uninspected = 0;
  /** Parts with content whose hash was not looked up in the allowlists (nothing to excuse). */
  unchecked = 0;

  get malicious(): boolean {
    return this.hits.some((h) => h.severity === 'malicious');
  }

  isAllowed(path: string): boolean {
    return this.allowed.some((p) => path === p || path.startsWith(`${p}/`) || path.startsWith(`${p}.`));
  }
}

/**
 * The embedded rules engine: EICAR, blocked and double extensions, disguised executables, hash
 * block and allow lists, Office macros and archive bombs, over every decoded part and archive
 * member the MIME walker yields. Needs no server; stops at the first malicious finding.
 */
export class RulesScanner implements Scanner {
  readonly name = 'rules';
  readonly backgroundMs = 0;
  readonly local = true;
  private readonly blockedExt: ReadonlySet<string>;
  private readonly blockedHashes: ReadonlySet<string>;
  private readonly allowedHashes: ReadonlySet<string>;
  private readonly print: string;

  constructor(
    private readonly settings: RulesSettings,
    private readonly options: RulesScannerOptions,
  ) {
    this.blockedExt = new Set(settings.blockedExtensions.map((e) => e.toLowerCase().replace(/^\./, '')));
    this.blockedHashes = new Set(settings.blockedSha256.map((h) => h.toLowerCase()));
    this.allowedHashes = new Set(settings.allowedSha256.map((h) => h.toLowerCase()));
    this.print = rulesFingerprint(settings);
  }

  async fingerprint(): Promise<string> {
    const list = this.options.allowList;
    return list !== undefined ? `${this.print}:allow=${await list.revision()}` : this.print;
  }

  async scan(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    const state = new ScanState();
    const raw = this.settings.eicar ? new StreamSearch([EICAR]) : undefined;
    let summary: WalkSummary;
    let rawExcused = false;
    try {
      summary = await walkMessage(
        message,
        {
          limits: this.settings.limits,
          spoolDir: this.options.spoolDir,
          memoryThreshold: this.settings.memorySpoolThreshold,
          signal: ctx.signal,
          ...(raw !== undefined ? { onRaw: (chunk: Buffer) => raw.push(chunk) } : {}),
        },
        async (part) => {
          if (state.isAllowed(part.path)) return;
          await this.inspect(part, state, ctx.signal, (raw?.matches.size ?? 0) > 0);
          return state.malicious ? 'stop' : undefined;
        },
      );
      // A raw hit is excused by any allowed part: look up the parts not looked up above (rare:
      // EICAR in the raw message but in no decoded part).
      if (raw?.matches.size && state.allowed.length === 0 && !state.malicious && state.unchecked > 0) {
        rawExcused = await this.anyPartAllowed(message, ctx.signal);
      }
    } catch (err) {
      if (ctx.signal.aborted || isSandgateError(err, 'ERR_ABORTED')) {
        throw new SandgateError('ERR_SCANNER_TIMEOUT', 'the rules scan was stopped at the deadline', {
          cause: err,
        });
      }
      if (isSandgateError(err, 'ERR_MESSAGE_MALFORMED')) {
        // We cannot see into it, and neither can the recipient's client reliably: hold it.
        return {
          kind: 'suspicious',
          threats: [Threats.malformed],
          details: { rule: 'malformed', reason: String(err.details.reason ?? 'parse') },
        };
      }
      throw err;
    }
    // A raw hit also covers MIME the walker could not take apart; an allowed part may hold it.
    if (raw?.matches.size && state.allowed.length === 0 && !rawExcused && !state.malicious) {
      state.hits.push({ threat: Threats.eicar, severity: 'malicious', rule: 'eicar', path: 'raw' });
    }
    return conclude(state, summary);
  }

  /** The configured list first; the shared one (a state lookup) only when that does not allow it. */
  private async isAllowedHash(sha256: string): Promise<boolean> {
    if (this.allowedHashes.has(sha256)) return true;
    return (await this.options.allowList?.has(sha256)) === true;
  }

  /** Walks the message again, only to ask whether any part's hash is allowed. */
  private async anyPartAllowed(message: MessageSource, signal: AbortSignal): Promise<boolean> {
    let allowed = false;
    await walkMessage(
      message,
      {
        limits: this.settings.limits,
        spoolDir: this.options.spoolDir,
        memoryThreshold: this.settings.memorySpoolThreshold,
        signal,
      },
      async (part) => {
        allowed = hasContent(part) && (await this.isAllowedHash(part.sha256));
        return allowed ? 'stop' : undefined;
      },
    );
    return allowed;
  }

  /**
   * Checks one part. The allowlists (a database lookup) are asked only when the answer matters:
   * the part has hits to excuse, is a container whose contents it would excuse, or the raw
   * message already holds EICAR; otherwise the part is counted as unchecked.
   */
  private async inspect(
    part: WalkedPart,
    state: ScanState,
    signal: AbortSignal,
    rawHit: boolean,
  ): Promise<void> {
    const hits: Hit[] = [];
    const hit = (threat: string, severity: Hit['severity'], rule: string) =>
      hits.push({ threat, severity, rule, path: part.path });
    const content = hasContent(part);

    await this.collect(part, content, signal, hit);
    if (content) {
      if (hits.length > 0 || part.container !== undefined || rawHit) {
        if (await this.isAllowedHash(part.sha256)) {
          state.allowed.push(part.path);
          return;
        }
      } else {
        state.unchecked++;
      }
    } else if (part.encrypted === true) {
      state.encrypted ??= part.path;
    } else {
      state.uninspected++;
    }
    state.hits.push(...hits);
  }

  /** The rules' hits on one part, allowlists aside. */
  private async collect(
    part: WalkedPart,
    content: boolean,
    signal: AbortSignal,
    hit: (threat: string, severity: Hit['severity'], rule: string) => void,
  ): Promise<void> {
    const s = this.settings;
    if (content && this.blockedHashes.size > 0 && this.blockedHashes.has(part.sha256))
      hit(Threats.blockedHash, 'malicious', 'blocked-sha256');

    // Names are visible even when the content is not (an encrypted member's name is not encrypted).
    // Every name the part goes by counts: a client may show or save it under any of them.
    const names = [...(part.filename !== undefined ? [part.filename] : []), ...(part.otherNames ?? [])];
    for (const name of names) {
      if (s.blockDoubleExtensions && doubleExtension(name, this.blockedExt) !== undefined) {
        hit(Threats.doubleExtension, 'malicious', 'double-extension');
        break;
      } else if (blockedExtension(name, this.blockedExt) !== undefined) {
        hit(Threats.blockedExtension, 'malicious', 'blocked-extension');
        break;
      }
    }
    if (s.macros !== 'off' && part.depth > 0 && isOoxmlVbaProject(part.path)) {
      hit(Threats.macro, s.macros, 'ooxml-macro');
    }

    if (!content) return;

    if (
      s.blockDisguisedExecutables &&
      executableKind(part.head) !== undefined &&
      !names.some((n) => isExecutableName(n, this.blockedExt))
    ) {
      hit(Threats.disguisedExecutable, 'malicious', 'disguised-executable');
    }

    const ole = s.macros !== 'off' && isOle(part.head);
    const patterns = [...(s.eicar ? [EICAR] : []), ...(ole ? [OLE_VBA_MARKER] : [])];
    if (patterns.length === 0 || part.size === 0) return;
    const search = new StreamSearch(patterns);
    await search.consume(part, signal);
    for (const i of search.matches) {
      if (patterns[i] === EICAR) hit(Threats.eicar, 'malicious', 'eicar');
      else if (s.macros !== 'off') hit(Threats.macro, s.macros, 'ole-macro');
    }
  }
}

/** False for an archive member yielded without its bytes (encrypted, unsupported method, damaged). */
function hasContent(part: WalkedPart): boolean {
  return part.encrypted !== true && part.unsupportedMethod === undefined && part.damaged !== true;
}

function conclude(state: ScanState, summary: WalkSummary): Finding {
  const partial = summary.limit !== undefined || state.uninspected > 0 || summary.unreadableArchives > 0;
  const base: Record<string, string | number | boolean> = {
    parts: summary.parts,
    members: summary.members,
    ...(summary.limit !== undefined ? { limit: summary.limit.kind, limitAt: summary.limit.at } : {}),
    ...(state.uninspected > 0 ? { uninspected: state.uninspected } : {}),
    ...(summary.unreadableArchives > 0 ? { unreadableArchives: summary.unreadableArchives } : {}),
  };
  const pick = (severity: Hit['severity']) => state.hits.filter((h) => h.severity === severity);
  const withHits = (hits: readonly Hit[]): FindingDetails => ({
    ...base,
    rule: hits.map((h) => h.rule).join(','),
    part: hits[0]?.path ?? '',
  });

  const malicious = pick('malicious');
  if (malicious.length > 0) {
    return {
      kind: 'malicious',
      threats: unique(malicious.map((h) => h.threat)),
      details: withHits(malicious),
      ...(partial ? { partial } : {}),
    };
  }
  const suspicious = pick('suspicious');
  // The message's structure, not a file's content: the hash allow list does not excuse these.
  for (const a of summary.anomalies) {
    suspicious.push({
      threat: anomalyThreat(a.kind),
      severity: 'suspicious',
      rule: `mime-${a.kind}`,
      path: a.at,
    });
  }
  const limit = summary.limit;
  if (limit !== undefined && limit.kind !== 'total-bytes') {
    suspicious.push({
      threat: limit.kind === 'parts' ? Threats.tooManyParts : Threats.archiveBomb,
      severity: 'suspicious',
      rule: `limit-${limit.kind}`,
      path: limit.at,
    });
  }
  if (suspicious.length > 0) {
    return {
      kind: 'suspicious',
      threats: unique(suspicious.map((h) => h.threat)),
      details: withHits(suspicious),
      ...(partial ? { partial } : {}),
    };
  }
  if (limit?.kind === 'total-bytes') {
    return {
      kind: 'failed',
      reason: 'too-large',
      message: 'decoded content exceeds the rules engine limit',
      details: base,
    };
  }
  if (state.encrypted !== undefined) {
    return {
      kind: 'failed',
      reason: 'encrypted',
      message: 'an archive member is encrypted',
      details: { ...base, part: state.encrypted },
    };
  }
  return { kind: 'clean', ...(partial ? { partial } : {}), details: base };
}

/** Content we could not decode has its own threat name; everything else is an ambiguity. */
function anomalyThreat(kind: AnomalyKind): string {
  return kind === 'yenc-multipart' || kind === 'binhex' ? Threats.undecoded : Threats.ambiguous;
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

/** SHA-256 over the rules version and every setting that changes a verdict (lists sorted). */
export function rulesFingerprint(settings: RulesSettings): string {
  const sorted = (xs: readonly string[]) => [...xs].map((x) => x.toLowerCase()).sort();
  const effective = {
    version: RULES_VERSION,
    blockedExtensions: sorted(settings.blockedExtensions),
    blockDoubleExtensions: settings.blockDoubleExtensions,
    blockDisguisedExecutables: settings.blockDisguisedExecutables,
    eicar: settings.eicar,
    macros: settings.macros,
    blockedSha256: sorted(settings.blockedSha256),
    allowedSha256: sorted(settings.allowedSha256),
    limits: settings.limits,
  };
  return `${RULES_VERSION}:${createHash('sha256').update(JSON.stringify(effective)).digest('hex').slice(0, 32)}`;
}
