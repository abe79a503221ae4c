/** One FILE request, from its line to its one final reply. */
export interface Request {
  readonly seq: string;
  readonly path: string | undefined;
  readonly msgId: string;
  readonly received: number;
  readonly deadline: number;
  readonly abort: AbortController;
  state: 'queued' | 'running' | 'done';
  timer?: NodeJS.Timeout;
}
