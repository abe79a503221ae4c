/** One FILE request, from its line to its one final reply. */
export interface Request {
  readonly seq: string;
  readonly path: string | undefined;
  readonly msgId: string;
  readonly received: number;
  /**
   * The request's one deadline: when the verdict core must have answered (helper.deadline after
   * the FILE line, less a margin to write the reply). The evaluator gets it; the session's timer
   * fires at it for requests still waiting for a slot.
   */
  readonly answerBy: number;
  /** Aborted at QUIT (the requests are left for the next instance). */
  readonly abort: AbortController;
  state: 'queued' | 'running' | 'done';
  timer?: NodeJS.Timeout;
}
