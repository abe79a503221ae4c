import { describe, expect, it } from 'vitest';
import { parseDuration, parseSince } from '../../../src/config/durations.js';

const NOW = Date.parse('2026-12-04T12:00:00Z');

describe('parseSince (quarantine list --since, the API since)', () => {
  it('takes a duration back from now with the units configuration durations use', () => {
    expect(parseSince('2h', NOW, '--since')).toBe(NOW - 2 * 3_600_000);
    expect(parseSince('7d', NOW, '--since')).toBe(NOW - 7 * 86_400_000);
    expect(parseSince('90s', NOW, '--since')).toBe(NOW - 90_000);
    expect(parseSince(' 30m ', NOW, '--since')).toBe(NOW - 1_800_000);
  });
  it('takes an ISO date or date/time', () => {
    expect(parseSince('2025-01-31', NOW, '--since')).toBe(Date.parse('2025-01-31'));
    expect(parseSince('2026-12-04T10:00:00Z', NOW, 'since')).toBe(NOW - 2 * 3_600_000);
  });
  it('refuses anything else with ERR_BAD_REQUEST naming the key', () => {
    expect(() => parseSince('yesterday-ish', NOW, 'since')).toThrow(
      expect.objectContaining({ code: 'ERR_BAD_REQUEST', details: { key: 'since' } }),
    );
    expect(() => parseSince('5 fortnights', NOW, '--since')).toThrow(/--since: not a date or duration/);
  });
  it('parseDuration is the configuration’s duration grammar', () => {
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('1500')).toBe(1500);
    expect(parseDuration('4w')).toBeUndefined();
  });
});
