import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from './free-port.js';

/** The EICAR test file (68 bytes). */
export const EICAR_TEST_FILE = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
/** A string our generated database flags as CUSTOM_SIGNATURE (clamd adds ".UNOFFICIAL"). */
export const CUSTOM_TEST_STRING = 'SANDGATE-CUSTOM-TEST-SIGNATURE-5f0c2a91';
export const CUSTOM_SIGNATURE = 'Sandgate.Test.Custom';

export interface RealClamd {
  /** "127.0.0.1:<port>" */
  readonly tcpAddress: string;
  readonly port: number;
  readonly socketPath: string;
  readonly dir: string;
  readonly confPath: string;
  /** A clamd.conf for clamdscan with only the TCP socket (clamdscan prefers LocalSocket otherwise). */
  readonly clamdscanConfPath: string;
  readonly pid: number;
  /** clamd's output so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

export interface StartClamdOptions {
  /** clamd's StreamMaxLength, e.g. "1M". Default "50M". */
  readonly streamMaxLength?: string;
  readonly maxThreads?: number;
  /** Give up when clamd is not ready after this many ms. */
  readonly readyTimeoutMs?: number;
}

/** The clamd binary (PATH, then the Debian locations), or undefined when it is not installed. */
export function findClamd(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = [...(env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) {
    if (d === '') continue;
    const candidate = join(d, 'clamd');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The clamdscan binary, or undefined. */
export function findClamdscan(env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const d of [...(env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    if (d === '') continue;
    try {
      accessSync(join(d, 'clamdscan'), constants.X_OK);
      return join(d, 'clamdscan');
    } catch {
      // not here
    }
  }
  return undefined;
}

const hex = (s: string): string => Buffer.from(s, 'latin1').toString('hex');

/** Writes the self-made signature database: EICAR by MD5 (.hdb) and by body (.ndb), plus our custom string. */
export function writeSignatureDb(dbDir: string): void {
  mkdirSync(dbDir, { recursive: true });
  const md5 = createHash('md5').update(EICAR_TEST_FILE, 'latin1').digest('hex');
  writeFileSync(join(dbDir, 'test.hdb'), `${md5}:${EICAR_TEST_FILE.length}:Test.EICAR.HDB\n`);
  writeFileSync(
    join(dbDir, 'test.ndb'),
    `Test.EICAR.NDB:0:*:${hex('EICAR-STANDARD-ANTIVIRUS-TEST-FILE')}\n${CUSTOM_SIGNATURE}:0:*:${hex(CUSTOM_TEST_STRING)}\n`,
  );
}

/** zPING over a fresh connection; resolves true on PONG. */
export function ping(target: { port: number } | { path: string }, timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket =
      'port' in target ? connect({ host: '127.0.0.1', port: target.port }) : connect({ path: target.path });
    let got = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write('zPING\0'));
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\0')) done(got === 'PONG\0');
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}

type Attempt = { kind: 'ready' } | { kind: 'clash' } | { kind: 'failed'; why: string };

/**
 * Starts a real clamd in the foreground with a generated database in a temp dir, on a free TCP
 * port of 127.0.0.1 (another port when the one picked was taken meanwhile) and a unix socket.
 * Ready when clamd prints "Listening daemon" and answers PING on both sockets.
 */
export async function startClamd(options: StartClamdOptions = {}): Promise<RealClamd> {
  const bin = findClamd();
  if (bin === undefined)
    throw new Error('clamd is not installed (Debian: apt-get install clamav-daemon clamdscan)');
  const dir = mkdtempSync(join(tmpdir(), 'sandgate-clamd-'));
  writeSignatureDb(join(dir, 'db'));
  const socketPath = join(dir, 'clamd.sock');
  const confPath = join(dir, 'clamd.conf');
  let lastWhy = '';
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      writeFileSync(
        confPath,
        [
          'Foreground yes',
          `DatabaseDirectory ${join(dir, 'db')}`,
          `TCPSocket ${port}`,
          'TCPAddr 127.0.0.1',
          `LocalSocket ${socketPath}`,
          'LogVerbose yes',
          `StreamMaxLength ${options.streamMaxLength ?? '50M'}`,
          `MaxThreads ${options.maxThreads ?? 4}`,
          'SelfCheck 0',
          '',
        ].join('\n'),
      );
      // One pipe for stdout and stderr keeps clamd's lines in order ("Cannot bind" comes before "Listening daemon").
      const child = spawn('/bin/sh', ['-c', 'exec "$0" -c "$1" 2>&1', bin, confPath], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let output = '';
      const result = await new Promise<Attempt>((resolve) => {
        const timer = setTimeout(
          () => resolve({ kind: 'failed', why: 'not ready in time' }),
          options.readyTimeoutMs ?? 30_000,
        );
        const finish = (a: Attempt): void => {
          clearTimeout(timer);
          resolve(a);
        };
        child.stdout?.setEncoding('utf8');
        child.stdout?.on('data', (d: string) => {
          output += d;
          if (/Cannot bind/.test(output)) finish({ kind: 'clash' });
          else if (/Listening daemon/.test(output)) finish({ kind: 'ready' });
        });
        child.on('exit', (code, signal) =>
          finish({ kind: 'failed', why: `clamd exited (${code ?? signal})` }),
        );
        child.on('error', (err) => finish({ kind: 'failed', why: err.message }));
      });
      if (result.kind === 'ready' && (await ping({ path: socketPath })) && (await ping({ port }))) {
        const clamdscanConfPath = join(dir, 'clamdscan.conf');
        writeFileSync(clamdscanConfPath, `TCPSocket ${port}\nTCPAddr 127.0.0.1\n`);
        return {
          tcpAddress: `127.0.0.1:${port}`,
          port,
          socketPath,
          dir,
          confPath,
          clamdscanConfPath,
          pid: child.pid as number,
          output: () => output,
          stop: async () => {
            await stopChild(child);
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await stopChild(child);
      lastWhy =
        result.kind === 'failed' ? result.why : result.kind === 'clash' ? `port ${port} taken` : 'no PONG';
      lastWhy += `\n${output.split('\n').slice(-15).join('\n')}`;
      if (result.kind !== 'clash') break;
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`clamd did not start: ${lastWhy}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(killer);
}
