import type { FailureReason, Outcome } from './outcome.js';

/** What a front end is told to do with a message. The front end owns the wire mapping. */
export type Action = 'deliver' | 'reject' | 'discard' | 'quarantine' | 'tempfail';

/** What the policy allows an operator to choose for a result. */
export type ResultAction = Action;

export interface PolicyConfig {
  readonly malicious: ResultAction;
  readonly suspicious: ResultAction;
  /** Keep a quarantine copy when the action for malicious or suspicious mail is reject or discard. */
  readonly keepCopy: boolean;
  /** A partial verdict (the scanner did not finish): 'as-is' trusts it; 'suspicious' treats a partial clean as suspicious. */
  readonly partialClean: 'as-is' | 'suspicious';
  readonly failure: Readonly<Record<FailureReason, ResultAction>>;
  /** How long (ms from first sight of the content) a failure may be answered with tempfail. */
  readonly tempfailWindowMs: number;
  /** What a failure becomes once the window has passed. Never 'tempfail'. */
  readonly afterWindow: Exclude<ResultAction, 'tempfail'>;
}

export const DEFAULT_POLICY: PolicyConfig = {
  malicious: 'reject',
  suspicious: 'quarantine',
  keepCopy: true,
  partialClean: 'suspicious',
  failure: {
    timeout: 'tempfail',
    unavailable: 'tempfail',
    protocol: 'tempfail',
    internal: 'tempfail',
    encrypted: 'quarantine',
    'too-large': 'quarantine',
  },
  tempfailWindowMs: 4 * 60 * 60 * 1000,
  afterWindow: 'quarantine',
};

export type DecisionVerdict = 'clean' | 'suspicious' | 'malicious' | 'unscanned';

export interface Decision {
  readonly action: Action;
  /** Write the original to the quarantine before acting (always true for 'quarantine'). */
  readonly keepCopy: boolean;
  readonly verdict: DecisionVerdict;
  /** Short machine-readable reason: 'clean', 'malicious', 'suspicious', 'failure:timeout', 'window-expired:timeout', 'bypass:sender', 'marked'. */
  readonly reason: string;
  readonly threats: readonly string[];
  /** Delivered although a scanner failed, because the operator chose it: the message carries a header saying so. */
  readonly failOpen: boolean;
  /** Delivered without scanning because a bypass list matched: the message carries a header saying so. */
  readonly bypass?: string;
}

export interface PolicyContext {
  readonly now: number;
  /** When this content was first seen failing to scan (epoch ms); undefined when nothing failed. */
  readonly firstFailureAt?: number;
}

const ACTION_RANK: Readonly<Record<Action, number>> = {
  deliver: 0,
  tempfail: 1,
  quarantine: 2,
  discard: 3,
  reject: 4,
};

function blocking(action: Action): boolean {
  return action === 'reject' || action === 'discard';
}

/**
 * Pure: scanner outcomes in, one decision out. Worst result wins: malicious, then suspicious,
 * then failures (the strictest configured action among them), then clean.
 */
export function decide(outcomes: readonly Outcome[], policy: PolicyConfig, ctx: PolicyContext): Decision {
  const malicious: string[] = [];
  const suspicious: string[] = [];
  const failures: FailureReason[] = [];
  let scanned = false;

  for (const o of outcomes) {
    switch (o.kind) {
      case 'malicious':
        malicious.push(...o.threats);
        scanned = true;
        break;
      case 'suspicious':
        suspicious.push(...o.threats);
        scanned = true;
        break;
      case 'clean':
        scanned = true;
        if (o.partial && policy.partialClean === 'suspicious')
          suspicious.push(`${o.scanner}:partial-analysis`);
        break;
      case 'failed':
        failures.push(o.reason);
        break;
      case 'skipped':
        break;
    }
  }

  if (malicious.length > 0) {
    return verdictDecision('malicious', policy.malicious, policy.keepCopy, unique(malicious));
  }
  if (suspicious.length > 0) {
    return verdictDecision('suspicious', policy.suspicious, policy.keepCopy, unique(suspicious));
  }
  if (failures.length > 0) {
    return failureDecision(failures, policy, ctx);
  }
  if (!scanned) {
    // Every scanner skipped the message (prefilter, not applicable): delivered, and said so in the header.
    return {
      action: 'deliver',
      keepCopy: false,
      verdict: 'unscanned',
      reason: 'skipped',
      threats: [],
      failOpen: false,
    };
  }
  return {
    action: 'deliver',
    keepCopy: false,
    verdict: 'clean',
    reason: 'clean',
    threats: [],
    failOpen: false,
  };
}

function verdictDecision(
  verdict: 'malicious' | 'suspicious',
  action: Action,
  keepCopy: boolean,
  threats: readonly string[],
): Decision {
  return {
    action,
    keepCopy: action === 'quarantine' || (keepCopy && blocking(action)),
    verdict,
    reason: verdict,
    threats,
    failOpen: false,
  };
}

function failureDecision(
  failures: readonly FailureReason[],
  policy: PolicyConfig,
  ctx: PolicyContext,
): Decision {
  // The strictest configured action among the failures decides; the first failure with it names the reason.
  let reason: FailureReason = failures[0] ?? 'internal';
  let action: Action = policy.failure[reason];
  for (const f of failures) {
    if (ACTION_RANK[policy.failure[f]] > ACTION_RANK[action]) {
      action = policy.failure[f];
      reason = f;
    }
  }
  const firstAt = ctx.firstFailureAt ?? ctx.now;
  if (action === 'tempfail' && ctx.now - firstAt >= policy.tempfailWindowMs) {
    const after = policy.afterWindow;
    return {
      action: after,
      keepCopy: after === 'quarantine' || blocking(after),
      verdict: 'unscanned',
      reason: `window-expired:${reason}`,
      threats: [],
      failOpen: after === 'deliver',
    };
  }
  return {
    action,
    keepCopy: action === 'quarantine' || blocking(action),
    verdict: 'unscanned',
    reason: `failure:${reason}`,
    threats: [],
    failOpen: action === 'deliver',
  };
}

function unique(items: readonly string[]): string[] {
  return [...new Set(items)];
}
