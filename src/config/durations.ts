import { z } from 'zod';

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A duration in milliseconds, written as a number of ms or a string with a unit: "250ms", "90s",
 * "4h", "7d". Parsed deliberately, so an environment string like "30s" works and "abc" fails.
 */
export const duration = z.union([z.number().int().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `not a duration: "${value}" (use e.g. 500ms, 30s, 5m, 4h, 7d)` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * (UNITS[m[2] ?? 'ms'] ?? 1));
});

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
