import type { FailureReason, Finding, FindingDetails } from '../../core/outcome.js';
import type { ReportNode, ScanResult } from './types.js';

/**
 * PT Sandbox result -> Finding (docs/pt-sandbox.md, "Mapping"):
 *
 * | verdict   | scan_state       | Finding                                   |
 * |-----------|------------------|-------------------------------------------|
 * | DANGEROUS | any              | malicious (partial unless FULL)           |
 * | UNWANTED  | any              | suspicious (partial unless FULL)          |
 * | CLEAN     | FULL             | clean                                     |
 * | CLEAN     | PARTIAL          | clean, partial (failed(encrypted) when an |
 * |           |                  | error says the content was encrypted)     |
 * | CLEAN     | UNSCANNED/other  | failed(reason from result errors)         |
 * | missing / unknown verdict     | failed(reason from result errors)         |
 *
 * Result error types -> failure reason: encrypted -> encrypted, max_depth_exceeded -> too-large,
 * sandbox_run_sample -> unavailable, anything else -> internal. An unknown verdict string with no
 * error is a protocol failure. `threats` come from the report (detection names); `threat` in
 * checkTask is informational only.
 */
export function mapResult(
  result: ScanResult,
  threats: readonly string[],
  details: FindingDetails = {},
): Finding {
  const verdict = result.verdict?.toUpperCase();
  const state = result.scan_state?.toUpperCase();
  const partial = state !== 'FULL';
  const errorTypes = (result.errors ?? []).map((e) => (e.type ?? '').toLowerCase());
  const withState = { ...details, scanState: state ?? 'none', verdict: verdict ?? 'none' };

  if (verdict === 'DANGEROUS' || verdict === 'UNWANTED') {
    const names = threats.length > 0 ? [...threats] : [`PT-Sandbox.${verdict}`];
    return {
      kind: verdict === 'DANGEROUS' ? 'malicious' : 'suspicious',
      threats: names,
      ...(partial ? { partial: true } : {}),
      details: withState,
    };
  }
  if (verdict === 'CLEAN' && state === 'FULL') return { kind: 'clean', details: withState };
  if (verdict === 'CLEAN' && state === 'PARTIAL' && !errorTypes.includes('encrypted')) {
    return { kind: 'clean', partial: true, details: withState };
  }
  const reason = failureReason(errorTypes, verdict);
  const what =
    verdict === undefined
      ? 'no verdict'
      : verdict === 'CLEAN'
        ? `verdict CLEAN with scan_state ${state ?? 'missing'}`
        : `unknown verdict ${verdict.slice(0, 40)}`;
  const errs = errorTypes.filter((t) => t !== '').join(',');
  return {
    kind: 'failed',
    reason,
    message: `PT Sandbox gave ${what}${errs ? ` (errors: ${errs})` : ''}`,
    details: withState,
  };
}

function failureReason(errorTypes: readonly string[], verdict: string | undefined): FailureReason {
  if (errorTypes.includes('encrypted')) return 'encrypted';
  if (errorTypes.includes('max_depth_exceeded')) return 'too-large';
  if (errorTypes.includes('sandbox_run_sample')) return 'unavailable';
  if (errorTypes.length > 0) return 'internal';
  if (verdict !== undefined && verdict !== 'CLEAN') return 'protocol';
  return 'internal';
}

/** Detection names from a report tree (engine_results[].detections[].detect, recursively), unique, capped. */
export function detectionNames(artifacts: readonly unknown[] | undefined, max = 20): string[] {
  const names = new Set<string>();
  const visit = (node: unknown, depth: number): void => {
    if (names.size >= max || depth > 32 || node === null || typeof node !== 'object') return;
    const n = node as ReportNode;
    const engines: unknown[] = Array.isArray(n.engine_results) ? (n.engine_results as unknown[]) : [];
    for (const engine of engines) {
      const detections = (engine as { detections?: unknown } | null)?.detections;
      for (const d of Array.isArray(detections) ? (detections as unknown[]) : []) {
        const { detect, threat } = (d ?? {}) as { detect?: unknown; threat?: unknown };
        const name = typeof detect === 'string' ? detect : typeof threat === 'string' ? threat : undefined;
        if (name !== undefined && name.trim() !== '' && names.size < max) names.add(clean(name));
      }
    }
    const children: unknown[] = Array.isArray(n.artifacts) ? (n.artifacts as unknown[]) : [];
    for (const child of children) visit(child, depth + 1);
  };
  for (const a of artifacts ?? []) visit(a, 0);
  return [...names];
}

/** Threat names end up in logs, SMTP replies and headers: printable ASCII, bounded. */
function clean(name: string): string {
  return name.replace(/[^\x21-\x7e]+/g, '_').slice(0, 120);
}
