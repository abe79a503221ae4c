import { z } from 'zod';
import { SandgateError } from '../core/errors.js';

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A duration in milliseconds, written as a number of ms or a string with a unit: "250ms", "90s",
 * "4h", "7d". Parsed deliberately, so an environment string like "30s" works and "abc" fails.
 */
export const duration = z.union([z.number().int().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a duration: "${value}" (use e.g. 500ms, 30s, 5m, 4h, 7d)` });
    return z.NEVER;
  }
  return ms;
});

/** "250ms", "90s", "4h", "7d", or a bare number of milliseconds; undefined when it is none of these. */
export function parseDuration(value: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  return m ? Math.round(Number(m[1]) * (UNITS[m[2] ?? 'ms'] ?? 1)) : undefined;
}

/**
 * A point in time given by an operator (`quarantine list --since`, the API's `since`): a duration
 * back from now with a unit ("30m", "2h", "7d") or an ISO date/time. ERR_BAD_REQUEST names `key`.
 */
export function parseSince(value: string, now: number, key: string): number {
  // A unit is required here: a bare number is read as a date by Date.parse ("2025").
  if (/[a-z]\s*$/i.test(value)) {
    const ms = parseDuration(value);
    if (ms !== undefined) return now - ms;
  }
  const t = Date.parse(value);
  if (Number.isNaN(t)) {
    throw new SandgateError(
      'ERR_BAD_REQUEST',
      `${key}: not a date or duration: "${value}" (e.g. 2h, 7d, 2025-01-31)`,
      { details: { key } },
    );
  }
  return t;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
};

/** A byte size: a number of bytes or "512k", "25M", "1G" (binary units). */
export const byteSize = z.union([z.number().int().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase() || 'b'];
  if (!m || unit === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a size: "${value}" (use e.g. 65536, 512k, 25M, 1G)` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * unit);
});
