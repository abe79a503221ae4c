import type { Readable, Writable } from 'node:stream';

/** What a command may touch of the outside world; tests pass their own. */
export interface CliIo {
  readonly stdin: Readable & { isTTY?: boolean };
  readonly stdout: Writable & { isTTY?: boolean };
  readonly stderr: Writable & { isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
}

/** Exit codes shared by every command (clamscan's convention for scan). */
export const EXIT = { ok: 0, found: 1, error: 2 } as const;

export function writeLine(stream: Writable, line: string): void {
  stream.write(`${line}\n`);
}
