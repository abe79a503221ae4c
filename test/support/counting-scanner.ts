import { appendFileSync } from 'node:fs';
import type { MessageSource } from '../../src/core/message.js';
import type { Finding } from '../../src/core/outcome.js';
import type { Scanner, ScanContext } from '../../src/core/scanner.js';

export interface CountingScannerOptions {
  readonly name?: string;
  /** What to answer (after reading the whole message). */
  readonly finding?: Finding | ((body: string) => Finding);
  /** How long each scan takes (ms); it honours ctx.signal. */
  readonly delayMs?: number;
  readonly backgroundMs?: number;
  /** Also append a line per call to this file (counts calls across processes). */
  readonly countFile?: string;
  readonly fingerprint?: string;
  /** Run as a local scanner (directly, without the verdict cache), as the rules engine is. */
  readonly local?: boolean;
}

/** A real Scanner that reads the message, waits, answers as told and counts its calls. */
export class CountingScanner implements Scanner {
  readonly name: string;
  readonly backgroundMs: number;
  readonly local: boolean;
  calls = 0;
  fingerprintValue: string;

  constructor(private readonly options: CountingScannerOptions = {}) {
    this.name = options.name ?? 'counting';
    this.backgroundMs = options.backgroundMs ?? 0;
    this.local = options.local ?? false;
    this.fingerprintValue = options.fingerprint ?? 'v1';
  }

  fingerprint(): Promise<string> {
    return Promise.resolve(this.fingerprintValue);
  }

  async scan(message: MessageSource, ctx: ScanContext): Promise<Finding> {
    this.calls++;
    if (this.options.countFile) appendFileSync(this.options.countFile, `${process.pid}\n`);
    let body = '';
    for await (const chunk of message.open() as AsyncIterable<Buffer>) body += chunk.toString('latin1');
    if (this.options.delayMs) {
      await new Promise<void>((resolve, reject) => {
        // The signal may be shared with other calls (a local scanner's is): take the listener off when done.
        const onAbort = () => {
          clearTimeout(t);
          reject(ctx.signal.reason as Error);
        };
        const t = setTimeout(() => {
          ctx.signal.removeEventListener('abort', onAbort);
          resolve();
        }, this.options.delayMs);
        ctx.signal.addEventListener('abort', onAbort, { once: true });
      });
    }
    const f = this.options.finding ?? { kind: 'clean' };
    return typeof f === 'function' ? f(body) : f;
  }
}
