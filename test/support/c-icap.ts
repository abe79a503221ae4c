import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  accessSync,
  chmodSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from './free-port.js';

/** Where Debian's c-icap and libc-icap-mod-virus-scan put their modules, templates and magic file. */
const MODULES_DIR = '/usr/lib/x86_64-linux-gnu/c_icap';
const TEMPLATE_DIR = '/usr/share/c_icap/templates/';
const MAGIC_FILE = '/etc/c-icap/c-icap.magic';

/**
 * Which virus_scan settings: 'debian' is /etc/c-icap/virus_scan.conf as Debian ships it (5M
 * MaxObjectSize, SendPercentData 5 after 2M, seven file types) with the clamd module enabled;
 * 'documented' is what docs/icap.md tells operators to set (every file type, no size limit on
 * avscan, no data before the verdict).
 */
export type CIcapProfile = 'debian' | 'documented';

export interface RealCIcap {
  readonly port: number;
  readonly dir: string;
  /** icap://127.0.0.1:<port>/<service> */
  url(service?: string): string;
  /** c-icap's server log so far (for failure messages). */
  log(): string;
  /** Kills c-icap (all its processes) and starts it again on the same port, same configuration. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** Stops c-icap and removes its directory. */
  close(): Promise<void>;
}

export interface StartCIcapOptions {
  /** The TCP port of the clamd c-icap hands files to (clamd_mod.ClamdPort). */
  readonly clamdPort: number;
  readonly profile?: CIcapProfile;
  readonly readyTimeoutMs?: number;
}

function findBinary(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const d of [...(env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin', '/usr/local/bin']) {
    if (d === '') continue;
    try {
      accessSync(join(d, name), constants.X_OK);
      return join(d, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The c-icap binary when it and the virus_scan and clamd modules are installed, else undefined. */
export function findCIcap(): string | undefined {
  const bin = findBinary('c-icap');
  if (bin === undefined) return undefined;
  try {
    accessSync(join(MODULES_DIR, 'virus_scan.so'), constants.R_OK);
    accessSync(join(MODULES_DIR, 'clamd_mod.so'), constants.R_OK);
  } catch {
    return undefined;
  }
  return bin;
}

function virusScanLines(profile: CIcapProfile): string[] {
  if (profile === 'debian') {
    return [
      'Service antivirus_module virus_scan.so',
      'ServiceAlias srv_clamav virus_scan',
      'ServiceAlias avscan virus_scan?allow204=on&sizelimit=off&mode=simple',
      'virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE',
      'virus_scan.SendPercentData 5',
      'virus_scan.StartSendPercentDataAfter 2M',
      'virus_scan.MaxObjectSize 5M',
      'virus_scan.DefaultEngine clamd',
    ];
  }
  // docs/icap.md, "Setting up c-icap": keep these in step with it.
  return [
    'Service antivirus_module virus_scan.so',
    'ServiceAlias avscan virus_scan?allow204=on&sizelimit=off&mode=simple',
    'virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GRAPHICS STREAM DOCUMENT',
    'virus_scan.SendPercentData 0',
    'virus_scan.StartSendPercentDataAfter 0',
    'virus_scan.MaxObjectSize 100M',
    'virus_scan.PassOnError off',
    'virus_scan.DefaultEngine clamd',
  ];
}

/** Whether something accepts connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** OPTIONS to the avscan service; resolves true on an ICAP 200. */
function optionsOk(port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () =>
      socket.write(
        `OPTIONS icap://127.0.0.1:${port}/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n`,
      ),
    );
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) done(got.startsWith('ICAP/1.0 200'));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}

/**
 * Starts a real c-icap in the foreground with the virus_scan service and its clamd module, in a
 * private directory (configuration, pid file, command socket, temporary files, logs) on a free
 * loopback port (another one when it was taken meanwhile). Ready when OPTIONS answers 200.
 * clamd reads c-icap's temporary files (clamd_mod sends SCAN with their path): both run as the
 * same user here, and the directory is world-readable.
 */
export async function startCIcap(options: StartCIcapOptions): Promise<RealCIcap> {
  const bin = findCIcap();
  if (bin === undefined) {
    throw new Error('c-icap is not installed (Debian: apt-get install c-icap libc-icap-mod-virus-scan)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'sandgate-c-icap-'));
  chmodSync(dir, 0o755);
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp, { mode: 0o755 });
  chmodSync(tmp, 0o755);
  const conf = join(dir, 'c-icap.conf');
  const serverLog = join(dir, 'server.log');
  const profile = options.profile ?? 'documented';
  let child: ChildProcess | undefined;
  let port = 0;

  const write = (p: number): void =>
    writeFileSync(
      conf,
      [
        `PidFile ${join(dir, 'c-icap.pid')}`,
        `CommandsSocket ${join(dir, 'c-icap.ctl')}`,
        'Timeout 60',
        'MaxKeepAliveRequests 100',
        'KeepAliveTimeout 600',
        'StartServers 1',
        'MaxServers 2',
        'MinSpareThreads 4',
        'MaxSpareThreads 16',
        'ThreadsPerChild 16',
        `Port 127.0.0.1:${p}`,
        `TmpDir ${tmp}`,
        'MaxMemObject 131072',
        'DebugLevel 1',
        `ModulesDir ${MODULES_DIR}`,
        `ServicesDir ${MODULES_DIR}`,
        `TemplateDir ${TEMPLATE_DIR}`,
        'TemplateDefaultLanguage en',
        `LoadMagicFile ${MAGIC_FILE}`,
        `ServerLog ${serverLog}`,
        `AccessLog ${join(dir, 'access.log')}`,
        'Module common clamd_mod.so',
        'clamd_mod.ClamdHost 127.0.0.1',
        `clamd_mod.ClamdPort ${options.clamdPort}`,
        ...virusScanLines(profile),
        '',
      ].join('\n'),
    );

  const readLog = (): string => {
    try {
      return readFileSync(serverLog, 'utf8');
    } catch {
      return '';
    }
  };

  /** Starts c-icap on `p`; resolves once OPTIONS answers, or with why not. */
  const launch = async (p: number): Promise<{ ok: true } | { ok: false; why: string }> => {
    write(p);
    let output = '';
    let exited: string | undefined;
    // Its own process group: c-icap forks children that hold the listening socket and kept-alive
    // connections, and must all go when it stops.
    const c = spawn(bin, ['-N', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child = c;
    c.stdout?.setEncoding('utf8').on('data', (d: string) => (output += d));
    c.stderr?.setEncoding('utf8').on('data', (d: string) => (output += d));
    c.on('exit', (code, signal) => (exited = `c-icap exited (${code ?? signal})`));
    const until = Date.now() + (options.readyTimeoutMs ?? 20_000);
    while (Date.now() < until) {
      if (exited !== undefined) return { ok: false, why: `${exited}\n${output}\n${readLog()}` };
      if (await optionsOk(p, 1000)) return { ok: true };
      await new Promise((r) => setTimeout(r, 50));
    }
    return { ok: false, why: `not ready in time\n${output}\n${readLog()}` };
  };

  /**
   * Kills c-icap and its children (SIGKILL to its process group: on SIGTERM c-icap waits for
   * kept-alive connections, and a child outliving its parent keeps the port), then waits until the
   * port refuses connections.
   */
  const stopChild = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.pid === undefined) return;
    const exited = c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : once(c, 'exit');
    try {
      process.kill(-c.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await exited;
    const until = Date.now() + 10_000;
    while (await accepts(port)) {
      if (Date.now() > until)
        throw new Error(`c-icap's port ${port} still accepts connections after SIGKILL`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  let lastWhy = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    port = await freePort();
    const r = await launch(port);
    if (r.ok) {
      return {
        port,
        dir,
        url: (service = 'avscan') => `icap://127.0.0.1:${port}/${service}`,
        log: readLog,
        restart: async () => {
          await stopChild();
          const again = await launch(port);
          if (!again.ok) throw new Error(`c-icap did not start again on ${port}: ${again.why}`);
        },
        stop: stopChild,
        close: async () => {
          await stopChild();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    await stopChild();
    lastWhy = r.why;
    if (!/bind|in use/i.test(r.why)) break;
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`c-icap did not start: ${lastWhy}`);
}
