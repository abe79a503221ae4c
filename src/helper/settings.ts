import type { ReplySettings } from './replies.js';

export interface HelperSettings {
  /** CommuniGate's base directory: FILE paths are resolved against it and may not leave it. */
  readonly baseDir: string;
  /** Budget per FILE request (ms), from the moment its line arrives. */
  readonly deadlineMs: number;
  /** FILE requests evaluated at once; more wait in order. */
  readonly concurrency: number;
  /** Longest command line accepted (bytes). */
  readonly maxLineLength: number;
  readonly maxProtocolVersion: number;
  readonly replies: ReplySettings;
}
