/** What one scanner concluded about one piece of content. Tri-state plus skipped and failed. */

export const FAILURE_REASONS = [
  'timeout',
  'unavailable',
  'too-large',
  'encrypted',
  'protocol',
  'internal',
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export const SKIP_REASONS = ['bypass', 'prefilter', 'not-applicable', 'monitor'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/** A scanner's own result. `partial` marks a verdict the scanner reached without finishing its analysis. */
export type Finding =
  | { readonly kind: 'clean'; readonly partial?: boolean; readonly details?: FindingDetails }
  | {
      readonly kind: 'suspicious';
      readonly threats: readonly string[];
      readonly partial?: boolean;
      readonly details?: FindingDetails;
    }
  | {
      readonly kind: 'malicious';
      readonly threats: readonly string[];
      readonly partial?: boolean;
      readonly details?: FindingDetails;
    }
  | { readonly kind: 'skipped'; readonly reason: SkipReason; readonly details?: FindingDetails }
  | {
      readonly kind: 'failed';
      readonly reason: FailureReason;
      readonly message: string;
      readonly details?: FindingDetails;
    };

/** A failed finding, as every adapter builds one: the reason, a message, and details if any. */
export type FailedFinding = Extract<Finding, { kind: 'failed' }>;

export function failedFinding(
  reason: FailureReason,
  message: string,
  details?: FindingDetails,
): FailedFinding {
  return { kind: 'failed', reason, message, ...(details ? { details } : {}) };
}

/** Non-sensitive extras a scanner may attach (sandbox scan id, task link, matched rule names). */
export type FindingDetails = Readonly<Record<string, string | number | boolean>>;

export type Outcome = Finding & {
  readonly scanner: string;
  /** true when the result came from the verdict cache (or from another process's scan of the same content). */
  readonly cached: boolean;
  readonly ms: number;
  /**
   * The scanner's engine or appliance version that reached this result (stored with the cached
   * verdict, so a cache hit names the version that judged the content). Absent when the scanner
   * has none or none was known yet.
   */
  readonly version?: string;
};

export type Verdict = 'clean' | 'suspicious' | 'malicious';

const SEVERITY: Readonly<Record<Finding['kind'], number>> = {
  skipped: 0,
  clean: 1,
  failed: 2,
  suspicious: 3,
  malicious: 4,
};

/** The worst of several findings: malicious > suspicious > failed > clean > skipped. */
export function worstFinding(findings: readonly Finding[]): Finding | undefined {
  let worst: Finding | undefined;
  for (const f of findings) {
    if (worst === undefined || SEVERITY[f.kind] > SEVERITY[worst.kind]) worst = f;
  }
  return worst;
}

export function describeFinding(f: Finding): string {
  switch (f.kind) {
    case 'clean':
      return f.partial ? 'clean(partial)' : 'clean';
    case 'suspicious':
    case 'malicious':
      return `${f.kind}(${f.threats.join(',')})`;
    case 'skipped':
      return `skipped(${f.reason})`;
    case 'failed':
      return `failed(${f.reason})`;
  }
}

/**
 * Each outcome as `scanner:result`, `:cached` added when it came from the cache and `@version`
 * when the scanner's version is known: the summary-line form.
 */
export function describeOutcomes(outcomes: readonly Outcome[]): string[] {
  return outcomes.map(
    (o) =>
      `${o.scanner}:${describeFinding(o)}${o.cached ? ':cached' : ''}${o.version !== undefined ? `@${o.version}` : ''}`,
  );
}
