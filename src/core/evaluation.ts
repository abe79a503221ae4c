import type { MarkCheck } from './mark.js';
import type { MessageSource } from './message.js';
import type { Outcome } from './outcome.js';
import type { Decision } from './policy.js';

/** A header a front end adds to a delivered message (prepended, in order). */
export interface HeaderField {
  readonly name: string;
  readonly value: string;
}

export interface EvaluateOptions {
  /** Epoch ms by which the front end must answer its peer. */
  readonly deadline: number;
  /** Aborts the evaluation (client went away, shutdown). */
  readonly signal?: AbortSignal;
  /** Called as each scanner starts and finishes (progress display). */
  readonly onProgress?: (event: { readonly scanner: string; readonly phase: 'start' | 'done' }) => void;
}

/** Everything a front end needs to answer its peer for one message. */
export interface Evaluation {
  readonly msgId: string;
  readonly decision: Decision;
  readonly outcomes: readonly Outcome[];
  /** SHA-256 (hex) of the message without its leading trace headers and our own headers. */
  readonly contentKey: string;
  /** Set when a copy was written to the quarantine. */
  readonly quarantineId?: string;
  /** Headers to add when the action is 'deliver' (empty when headers are off). */
  readonly headers: readonly HeaderField[];
  /** Names of inbound X-Sandgate-* header fields the front end should strip before handing the message on. */
  readonly stripHeaders: readonly string[];
  /** The message carried a valid mark of this installation and was not scanned again. */
  readonly alreadyJudged: boolean;
  /** Each X-Sandgate-Mark the message carried, as checked, in order (absent when it had none). */
  readonly marks?: readonly MarkCheck[];
  readonly ms: number;
}

/** The verdict core as the front ends see it. */
export interface Evaluator {
  evaluate(message: MessageSource, options: EvaluateOptions): Promise<Evaluation>;
}

/**
 * Time a front end keeps back from its deadline (helper.deadline, relay.deadline, milter.deadline)
 * when it asks the core: the core decides by `deadline - replyMargin` (a scan still running then
 * is a failure, decided by policy.failure), so its answer can still be written before the front
 * end's own timer, which only fires when the core did not answer at all.
 */
export function replyMargin(deadlineMs: number): number {
  return Math.min(250, Math.floor(deadlineMs / 10));
}
