import { describe, expect, it } from 'vitest';
import { FAILURE_REASONS, type FailureReason, type Outcome } from '../../../src/core/outcome.js';
import { DEFAULT_POLICY, decide, type PolicyConfig } from '../../../src/core/policy.js';

const HOUR = 3_600_000;
const now = 1_800_000_000_000;

function o(kind: Outcome['kind'], extra: Record<string, unknown> = {}, scanner = 's1'): Outcome {
  const base = { scanner, cached: false, ms: 1 };
  switch (kind) {
    case 'clean':
      return { ...base, kind, ...extra };
    case 'suspicious':
    case 'malicious':
      return { ...base, kind, threats: ['T'], ...extra };
    case 'skipped':
      return { ...base, kind, reason: 'prefilter', ...extra };
    case 'failed':
      return { ...base, kind, reason: 'timeout', message: 'm', ...extra };
  }
}

describe('policy defaults', () => {
  it.each([
    { name: 'clean', outcomes: [o('clean')], action: 'deliver', keepCopy: false, verdict: 'clean' },
    {
      name: 'malicious -> reject with a copy',
      outcomes: [o('malicious')],
      action: 'reject',
      keepCopy: true,
      verdict: 'malicious',
    },
    {
      name: 'suspicious -> quarantine',
      outcomes: [o('suspicious')],
      action: 'quarantine',
      keepCopy: true,
      verdict: 'suspicious',
    },
    {
      name: 'malicious beats a failure',
      outcomes: [o('failed'), o('malicious', {}, 's2')],
      action: 'reject',
      keepCopy: true,
      verdict: 'malicious',
    },
    {
      name: 'suspicious beats a failure',
      outcomes: [o('failed'), o('suspicious', {}, 's2')],
      action: 'quarantine',
      keepCopy: true,
      verdict: 'suspicious',
    },
    {
      name: 'malicious beats suspicious',
      outcomes: [o('suspicious'), o('malicious', {}, 's2')],
      action: 'reject',
      keepCopy: true,
      verdict: 'malicious',
    },
    {
      name: 'partial clean -> suspicious',
      outcomes: [o('clean', { partial: true })],
      action: 'quarantine',
      keepCopy: true,
      verdict: 'suspicious',
    },
    {
      name: 'all skipped -> delivered, marked unscanned',
      outcomes: [o('skipped')],
      action: 'deliver',
      keepCopy: false,
      verdict: 'unscanned',
    },
    {
      name: 'clean plus skipped -> clean',
      outcomes: [o('clean'), o('skipped', {}, 's2')],
      action: 'deliver',
      keepCopy: false,
      verdict: 'clean',
    },
  ])('$name', ({ outcomes, action, keepCopy, verdict }) => {
    const d = decide(outcomes, DEFAULT_POLICY, { now });
    expect(d.action).toBe(action);
    expect(d.keepCopy).toBe(keepCopy);
    expect(d.verdict).toBe(verdict);
    expect(d.failOpen).toBe(false);
  });

  it('names the threats of every malicious outcome once', () => {
    const d = decide(
      [o('malicious', { threats: ['A', 'B'] }), o('malicious', { threats: ['B', 'C'] }, 's2')],
      DEFAULT_POLICY,
      { now },
    );
    expect(d.threats).toEqual(['A', 'B', 'C']);
  });

  it('trusts a partial clean when the operator says as-is', () => {
    const d = decide([o('clean', { partial: true })], { ...DEFAULT_POLICY, partialClean: 'as-is' }, { now });
    expect(d.action).toBe('deliver');
  });
});

describe('failures', () => {
  const expected: Record<FailureReason, string> = {
    timeout: 'tempfail',
    unavailable: 'tempfail',
    protocol: 'tempfail',
    internal: 'tempfail',
    encrypted: 'quarantine',
    'too-large': 'quarantine',
  };
  it.each(FAILURE_REASONS.map((reason) => ({ reason })))('failed($reason) by default', ({ reason }) => {
    const d = decide([o('failed', { reason })], DEFAULT_POLICY, { now, firstFailureAt: now });
    expect(d.action).toBe(expected[reason]);
    expect(d.verdict).toBe('unscanned');
    expect(d.reason).toBe(`failure:${reason}`);
    // a tempfail keeps no copy (the sender's MTA keeps the message); a quarantine always does
    expect(d.keepCopy).toBe(d.action === 'quarantine');
  });

  it('tempfails inside the window and quarantines after it', () => {
    const inside = decide([o('failed')], DEFAULT_POLICY, { now, firstFailureAt: now - 4 * HOUR + 1 });
    expect(inside.action).toBe('tempfail');
    const after = decide([o('failed')], DEFAULT_POLICY, { now, firstFailureAt: now - 4 * HOUR });
    expect(after.action).toBe('quarantine');
    expect(after.keepCopy).toBe(true);
    expect(after.reason).toBe('window-expired:timeout');
  });

  it('the strictest failure action wins', () => {
    const d = decide(
      [o('failed', { reason: 'timeout' }), o('failed', { reason: 'encrypted' }, 's2')],
      DEFAULT_POLICY,
      {
        now,
      },
    );
    expect(d.action).toBe('quarantine');
    expect(d.reason).toBe('failure:encrypted');
  });

  it('fail-open is visible: deliver with failOpen set', () => {
    const policy: PolicyConfig = {
      ...DEFAULT_POLICY,
      failure: { ...DEFAULT_POLICY.failure, unavailable: 'deliver' },
    };
    const d = decide([o('failed', { reason: 'unavailable' })], policy, { now });
    expect(d.action).toBe('deliver');
    expect(d.failOpen).toBe(true);
    expect(d.verdict).toBe('unscanned');
  });

  it('fail-open after the window is visible too', () => {
    const policy: PolicyConfig = { ...DEFAULT_POLICY, afterWindow: 'deliver' };
    const d = decide([o('failed')], policy, { now, firstFailureAt: now - 5 * HOUR });
    expect(d).toMatchObject({ action: 'deliver', failOpen: true, reason: 'window-expired:timeout' });
  });

  it('a discard for malicious keeps a copy unless the operator turned copies off', () => {
    const discard = { ...DEFAULT_POLICY, malicious: 'discard' as const };
    expect(decide([o('malicious')], discard, { now }).keepCopy).toBe(true);
    expect(decide([o('malicious')], { ...discard, keepCopy: false }, { now }).keepCopy).toBe(false);
  });
});
