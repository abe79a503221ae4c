import { createHmac, timingSafeEqual } from 'node:crypto';
import type { HeaderField } from './evaluation.js';
import { describeFinding, type Outcome } from './outcome.js';
import type { Decision } from './policy.js';

export const VERDICT_HEADER = 'X-Sandgate-Verdict';
export const MARK_HEADER = 'X-Sandgate-Mark';

/** What a mark vouches for: scanned clean here, or released from our quarantine by an operator. */
export type MarkKind = 'clean' | 'released';

export interface MarkClaims {
  readonly kind: MarkKind;
  readonly msgId: string;
  /** Epoch seconds when the mark was made. */
  readonly at: number;
}

/**
 * X-Sandgate-Mark: proof that this installation already judged this exact content.
 * `v=1; k=clean; id=<msgId>; t=<epoch s>; mac=<base64url HMAC-SHA256>` where the HMAC, keyed with
 * the per-installation key, covers kind, msgId, time and the content key. A mark copied onto other
 * content, forged without the key, or older than the maximum age does not verify.
 */
export function createMark(key: Buffer, claims: MarkClaims, contentKey: string): string {
  return `v=1; k=${claims.kind}; id=${claims.msgId}; t=${claims.at}; mac=${mac(key, claims, contentKey)}`;
}

export type MarkCheck =
  | { readonly ok: true; readonly claims: MarkClaims }
  | { readonly ok: false; readonly reason: 'syntax' | 'mac' | 'expired' | 'future' };

export function verifyMark(
  key: Buffer,
  value: string,
  contentKey: string,
  nowMs: number,
  maxAgeMs: number,
): MarkCheck {
  const fields = new Map<string, string>();
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const kind = fields.get('k');
  const msgId = fields.get('id');
  const at = Number(fields.get('t'));
  const given = fields.get('mac');
  if (
    fields.get('v') !== '1' ||
    (kind !== 'clean' && kind !== 'released') ||
    !msgId ||
    !/^[\w.-]{1,80}$/.test(msgId) ||
    !Number.isSafeInteger(at) ||
    !given
  ) {
    return { ok: false, reason: 'syntax' };
  }
  const claims: MarkClaims = { kind, msgId, at };
  const expected = Buffer.from(mac(key, claims, contentKey));
  const actual = Buffer.from(given);
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected))
    return { ok: false, reason: 'mac' };
  const ageMs = nowMs - at * 1000;
  if (ageMs > maxAgeMs) return { ok: false, reason: 'expired' };
  if (ageMs < -5 * 60 * 1000) return { ok: false, reason: 'future' };
  return { ok: true, claims };
}

function mac(key: Buffer, claims: MarkClaims, contentKey: string): string {
  return createHmac('sha256', key)
    .update(`sandgate-mark-v1\n${claims.kind}\n${claims.msgId}\n${claims.at}\n${contentKey}`)
    .digest('base64url');
}

/** The first mark among `values` that verifies for this content; `onCheck` sees every check. */
export function findValidMark(
  values: readonly string[],
  key: Buffer,
  contentKey: string,
  nowMs: number,
  maxAgeMs: number,
  onCheck: (check: MarkCheck) => void,
): MarkKind | undefined {
  for (const value of values) {
    const check = verifyMark(key, value, contentKey, nowMs, maxAgeMs);
    onCheck(check);
    if (check.ok) return check.claims.kind;
  }
  return undefined;
}

/**
 * The header fields a delivered message carries: X-Sandgate-Verdict when headers are on, and
 * always when the message was not fully scanned (fail-open, bypass, monitor, all skipped), so
 * nothing unscanned passes silently; X-Sandgate-Mark only on clean mail with headers on.
 */
export function verdictHeaders(input: {
  readonly msgId: string;
  readonly decision: Decision;
  readonly outcomes: readonly Outcome[];
  readonly contentKey: string;
  readonly markKey: Buffer;
  readonly now: number;
  readonly enabled: boolean;
}): HeaderField[] {
  const { msgId, decision, outcomes } = input;
  if (!input.enabled && decision.verdict === 'clean') return [];
  const scanners = outcomes.map((o) => `${o.scanner}:${describeFinding(o)}`).join(',');
  const value = [
    decision.verdict,
    `reason=${decision.reason}`,
    ...(scanners ? [`scanners=${scanners}`] : []),
    `id=${msgId}`,
  ].join('; ');
  const fields: HeaderField[] = [{ name: VERDICT_HEADER, value }];
  if (input.enabled && decision.verdict === 'clean') {
    const mark = createMark(
      input.markKey,
      { kind: 'clean', msgId, at: Math.floor(input.now / 1000) },
      input.contentKey,
    );
    fields.push({ name: MARK_HEADER, value: mark });
  }
  return fields;
}
