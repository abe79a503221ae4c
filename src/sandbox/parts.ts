/**
 * Granularity 'parts' for the scanners that take one object at a time (clamd, ICAP): each decoded
 * MIME leaf goes to the engine on its own (zip archives as they are: the engine opens them),
 * memoised by content so a part seen in another message is not sent again.
 *
 * How the parts' findings make the message's: malicious wins (and stops the walk); then the first
 * failure (a timeout or an unreachable engine stops the walk: the next part would wait as long);
 * then suspicious; a message with nothing the walker calls a part (no header/body split, an empty
 * body) goes to the engine whole, as does one the walker cannot read (ERR_MESSAGE_MALFORMED); a
 * walk limit reached is too-large; otherwise clean.
 */
import { isSandgateError } from '../core/errors.js';
import type { MessageSource } from '../core/message.js';
import { failedFinding as failed, type FailedFinding, type Finding } from '../core/outcome.js';
import type { ScanContext } from '../core/scanner.js';
import { walkMessage, type WalkedPart, type WalkLimits } from '../mime/walker.js';

/** Where decoded parts are spooled, and the walker's bomb limits (the scanners' `walk` option). */
export interface PartWalk {
  readonly spoolDir: string;
  readonly limits: WalkLimits;
  readonly memoryThreshold?: number;
}

export interface EachPartOptions {
  /** The scanner's name: the memo key's prefix. */
  readonly name: string;
  /** Its `<name>.parts_fallback` event, written out so that docs/logging.md's catalogue test finds it. */
  readonly fallbackEvent: Readonly<Record<'event', string>>;
  readonly walk: PartWalk;
  scanPart(part: WalkedPart): Promise<Finding>;
  scanWhole(): Promise<Finding>;
  /**
   * A detail the parts' findings carry that the message's finding keeps when every part that has
   * it agrees (ICAP's `istag`: several servers may differ).
   */
  readonly agreedDetail?: string;
}

export async function scanEachPart(
  message: MessageSource,
  ctx: ScanContext,
  o: EachPartOptions,
): Promise<Finding> {
  const threats = new Set<string>();
  let kind: 'malicious' | 'suspicious' | undefined;
  let firstFailure: FailedFinding | undefined;
  let scanned = 0;
  const agreed = new Set<string>();
  const fallback = (reason: string, text: string): Promise<Finding> => {
    ctx.log.debug({ ...o.fallbackEvent, reason }, text);
    return o.scanWhole();
  };
  let summary;
  try {
    summary = await walkMessage(
      message,
      {
        limits: o.walk.limits,
        spoolDir: o.walk.spoolDir,
        ...(o.walk.memoryThreshold !== undefined ? { memoryThreshold: o.walk.memoryThreshold } : {}),
        expandArchives: false,
        signal: ctx.signal,
      },
      async (part) => {
        if (part.container === 'message' || part.size === 0) return;
        const finding = await ctx.memo.run(`${o.name}-part:${part.sha256}`, () => o.scanPart(part));
        scanned++;
        const detail = o.agreedDetail !== undefined ? finding.details?.[o.agreedDetail] : undefined;
        if (typeof detail === 'string') agreed.add(detail);
        if (finding.kind === 'malicious' || finding.kind === 'suspicious') {
          for (const t of finding.threats) threats.add(t);
          if (finding.kind === 'malicious') {
            kind = 'malicious';
            return 'stop';
          }
          kind ??= 'suspicious';
          return undefined;
        }
        if (finding.kind === 'failed') {
          firstFailure ??= failed(finding.reason, `part ${part.path}: ${finding.message}`, {
            part: part.path,
          });
          if (finding.reason === 'timeout' || finding.reason === 'unavailable') return 'stop';
        }
        return undefined;
      },
    );
  } catch (err) {
    if (isSandgateError(err, 'ERR_ABORTED'))
      return failed('timeout', 'aborted while walking the message parts');
    if (isSandgateError(err, 'ERR_MESSAGE_MALFORMED'))
      return fallback(err.message, 'MIME not walkable; sending the whole message');
    throw err;
  }
  const details = {
    parts: scanned,
    ...(o.agreedDetail !== undefined && agreed.size === 1
      ? { [o.agreedDetail]: [...agreed][0] as string }
      : {}),
  };
  if (kind === 'malicious') return { kind, threats: [...threats], details };
  if (firstFailure !== undefined) return firstFailure;
  if (kind === 'suspicious') return { kind, threats: [...threats], details };
  if (scanned === 0 && summary.limit === undefined && message.size > 0)
    return fallback('no parts', 'no MIME parts; sending the whole message');
  if (summary.limit !== undefined) {
    return failed('too-large', `MIME walk limit ${summary.limit.kind} reached at part ${summary.limit.at}`, {
      parts: scanned,
    });
  }
  return { kind: 'clean', details };
}
