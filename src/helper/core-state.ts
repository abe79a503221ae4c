import type { Evaluator } from '../core/evaluation.js';

/**
 * The verdict core, or why there is none: then the helper runs in broken mode and answers every
 * FILE with the tempfail reply, saying why in a `* ` line.
 */
export type CoreState =
  { readonly evaluator: Evaluator } | { readonly evaluator?: undefined; readonly brokenReason: string };
