import { replyMargin, type Evaluation, type Evaluator } from '../core/evaluation.js';
import type { Forwarder } from './forwarder.js';

/** What the relay's evaluation of one message runs under. */
export interface DeadlineContext {
  readonly evaluator: Evaluator;
  /** relay.deadline: the budget from the start of DATA, in ms. */
  readonly deadlineMs: number;
  readonly now: () => number;
}

/** Runs the evaluator under the relay deadline; the keep-alive NOOPs hold the next hop meanwhile. */
export async function evaluateUnderDeadline(
  ctx: DeadlineContext,
  spool: Parameters<Evaluator['evaluate']>[0],
  forwarder: Forwarder,
  started: number,
  /** The session's signal: aborted when the client goes away, so the evaluation can stop early. */
  signal: AbortSignal,
): Promise<Evaluation | 'deadline' | Error> {
  const deadline = started + ctx.deadlineMs;
  // Not aborted at the deadline: the core lets a scan run on so its verdict answers the retry.
  const stopKeepAlive = forwarder.keepAlive();
  let timer: NodeJS.Timeout | undefined;
  const overrun = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), Math.max(0, deadline - ctx.now()));
  });
  try {
    return await Promise.race([
      ctx.evaluator
        .evaluate(spool, { deadline: deadline - replyMargin(ctx.deadlineMs), signal })
        .catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))),
      overrun,
    ]);
  } finally {
    clearTimeout(timer);
    stopKeepAlive();
  }
}
