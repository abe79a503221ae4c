/**
 * A CommuniGate Pro emulator for the helper tests: a temp base directory with queue files
 * (including hashed Queue/57/ paths), and the real `sandgate helper` process spawned in it and
 * spoken to on stdin/stdout, the way CommuniGate's ENQUEUER does.
 *
 *   const base = new CgpBase();
 *   const path = base.queueFile('Queue/57/100.msg', { body: buildMessage() });
 *   const cgp = await CgpHelper.start({ base, config: { stateDir: ... } });
 *   const reply = await cgp.request('00002', `FILE ${path}`);   // '00002 OK'
 *   await cgp.quit();                                            // exit code 0
 *
 * Replies are collected by their sequence token; `* ` lines are kept apart; stderr is captured.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MAIN_JS = join(ROOT, 'dist', 'cli', 'main.js');

export interface QueueFileSpec {
  /** Envelope sender; '' writes `<>` (a DSN). */
  readonly sender?: string;
  readonly recipients?: readonly string[];
  /** The S line's module (SMTP, HTTP, DSN, RULE, ...). */
  readonly module?: string;
  readonly clientAddress?: string;
  /** Write an `A` line (CGP 6.x SMTP mail has one; DSNs do not). Default true. */
  readonly aLine?: boolean;
  /** Tags in this order; default S A O P R. */
  readonly order?: readonly ('S' | 'A' | 'O' | 'P' | 'R')[];
  /** CRLF line ends in the envelope and the message (a Windows server); default LF (Unix). */
  readonly crlf?: boolean;
  readonly body: Buffer | string;
}

/** The envelope block and message of a CGP queue file. */
export function queueFileBytes(spec: QueueFileSpec): Buffer {
  const eol = spec.crlf ? '\r\n' : '\n';
  const stamp = '26-04-2019 15:57:14 0000';
  const sender = spec.sender ?? 'alice@example.test';
  const recipients = spec.recipients ?? ['bob@example.net'];
  const module = spec.module ?? 'SMTP';
  const ip = spec.clientAddress ?? (module === 'DSN' ? '0.0.0.0' : '192.0.2.10');
  const lines: Record<string, string[]> = {
    S: [`S ${module} [${ip}]`],
    A: spec.aLine === false ? [] : ['A mail.example.net [198.51.100.7]'],
    O: ['O L'],
    P: [`P I ${stamp} ____ ____ <${sender}>`],
    R: recipients.map((r) => `R W ${stamp} ____ _FY_ <${r}>`),
  };
  const order = spec.order ?? ['S', 'A', 'O', 'P', 'R'];
  const envelope = order.flatMap((t) => lines[t] ?? []).join(eol);
  let body = Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body);
  // A Unix server stores messages with LF, a Windows server with CRLF.
  body = Buffer.from(body.toString('latin1').replace(/\r?\n/g, eol), 'latin1');
  return Buffer.concat([Buffer.from(`${envelope}${eol}${eol}`), body]);
}

/** A temporary CommuniGate base directory. */
export class CgpBase {
  readonly dir: string;

  constructor(prefix = 'sg-cgp-') {
    this.dir = mkdtempSync(join(tmpdir(), prefix));
    mkdirSync(join(this.dir, 'Queue'), { recursive: true });
  }

  /** Writes a queue file at `rel` (e.g. Queue/57/1846258457.msg) and returns `rel` for the FILE line. */
  queueFile(rel: string, spec: QueueFileSpec | Buffer): string {
    const abs = join(this.dir, rel);
    mkdirSync(dirname(abs), { recursive: true });
    writeFileSync(abs, Buffer.isBuffer(spec) ? spec : queueFileBytes(spec));
    return rel;
  }

  path(rel: string): string {
    return join(this.dir, rel);
  }

  /** SHA-256 of a file, to show the helper never changed it. */
  hash(rel: string): string {
    return createHash('sha256')
      .update(readFileSync(join(this.dir, rel)))
      .digest('hex');
  }

  /** Writes a YAML config into the base directory and returns its absolute path. */
  config(name: string, config: unknown): string {
    const abs = join(this.dir, name);
    writeFileSync(abs, typeof config === 'string' ? config : stringify(config));
    return abs;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface HelperExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface StartOptions {
  readonly base: CgpBase;
  /** A config object (written as YAML) or the path of a config file. */
  readonly config: unknown;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

/** The real helper process, driven as CommuniGate drives it. */
export class CgpHelper {
  readonly startedAt: number;
  /** Every stdout line, in order (end of line removed). */
  readonly lines: string[] = [];
  /** Final replies by sequence token; more than one entry for a token is a protocol error. */
  readonly replies = new Map<string, string[]>();
  /** Raw stdout bytes. */
  stdoutBytes = Buffer.alloc(0);
  stderr = '';
  /** Arrival time (performance.now) of each line. */
  readonly times: number[] = [];
  readonly exited: Promise<HelperExit>;
  private exit: HelperExit | undefined;
  private buf = '';
  private waiters: Array<() => void> = [];

  private constructor(readonly child: ChildProcessWithoutNullStreams) {
    this.startedAt = performance.now();
    child.stdout.on('data', (c: Buffer) => {
      this.stdoutBytes = Buffer.concat([this.stdoutBytes, c]);
      this.buf += c.toString('utf8');
      let i;
      while ((i = this.buf.indexOf('\n')) !== -1) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        this.lines.push(line);
        this.times.push(performance.now());
        if (!line.startsWith('* ')) {
          const seq = line.split(' ')[0] ?? '';
          const list = this.replies.get(seq) ?? [];
          list.push(line);
          this.replies.set(seq, list);
        }
      }
      this.wake();
    });
    child.stderr.on('data', (c: Buffer) => {
      this.stderr += c.toString('utf8');
    });
    child.stdin.on('error', () => undefined);
    this.exited = new Promise((resolveExit) => {
      child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        this.wake();
        resolveExit(this.exit);
      });
    });
  }

  static start(options: StartOptions): CgpHelper {
    const configPath =
      typeof options.config === 'string'
        ? options.config
        : options.base.config(
            `sandgate-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`,
            options.config,
          );
    const child = spawn(
      process.execPath,
      [MAIN_JS, 'helper', '--config', configPath, ...(options.args ?? [])],
      {
        cwd: options.base.dir,
        env: { PATH: process.env.PATH ?? '', ...(options.env ?? {}) },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    return new CgpHelper(child);
  }

  /** `* ` lines received so far. */
  get info(): string[] {
    return this.lines.filter((l) => l.startsWith('* '));
  }

  send(...lines: string[]): void {
    this.child.stdin.write(lines.map((l) => `${l}\n`).join(''));
  }

  sendRaw(bytes: Buffer | string): void {
    this.child.stdin.write(bytes);
  }

  /** Sends one command and waits for its reply. */
  async request(seq: string, command: string, timeoutMs = 20_000): Promise<string> {
    this.send(`${seq} ${command}`);
    return this.reply(seq, timeoutMs);
  }

  /** Waits for the final reply to `seq` (exact token). */
  async reply(seq: string, timeoutMs = 20_000): Promise<string> {
    await this.until(() => this.replies.has(seq), `reply to ${seq}`, timeoutMs);
    return (this.replies.get(seq) as string[])[0] as string;
  }

  async waitForInfo(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
    await this.until(() => this.info.some((l) => pattern.test(l)), `info line ${pattern}`, timeoutMs);
    return this.info.find((l) => pattern.test(l)) as string;
  }

  async replyCount(n: number, timeoutMs = 20_000): Promise<void> {
    await this.until(() => this.replies.size >= n, `${n} replies`, timeoutMs);
  }

  /** QUIT and wait for the process to end. */
  async quit(seq = '999999', timeoutMs = 10_000): Promise<{ reply: string; exit: HelperExit }> {
    const reply = await this.request(seq, 'QUIT', timeoutMs);
    this.child.stdin.end();
    const exit = await this.waitExit(timeoutMs);
    return { reply, exit };
  }

  /** Closes stdin (end of input) and waits for the process to end. */
  async endInput(timeoutMs = 10_000): Promise<HelperExit> {
    this.child.stdin.end();
    return this.waitExit(timeoutMs);
  }

  async waitExit(timeoutMs = 10_000): Promise<HelperExit> {
    await this.until(() => this.exit !== undefined, 'process exit', timeoutMs, true);
    return this.exit as HelperExit;
  }

  kill(): void {
    if (this.exit === undefined) this.child.kill('SIGKILL');
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async until(
    done: () => boolean,
    what: string,
    timeoutMs: number,
    allowExit = false,
  ): Promise<void> {
    const limit = performance.now() + timeoutMs;
    while (!done()) {
      if (!allowExit && this.exit !== undefined) {
        throw new Error(
          `helper exited (${JSON.stringify(this.exit)}) while waiting for ${what}; stderr: ${this.stderr}`,
        );
      }
      const left = limit - performance.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stdout: ${this.lines.join(' | ')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}
