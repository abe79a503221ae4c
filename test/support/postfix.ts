import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';

export interface PostfixInstance {
  readonly dir: string;
  /** smtpd whose mail goes through content_filter = scan:[127.0.0.1]:<filterPort> (without filterPort: straight to the relayhost). */
  readonly inPort: number;
  /** The smtpd whose mail goes through the milter at `milterPort` (one of the options' milterPorts). */
  inPortForMilter(milterPort: number): number;
  /** An smtpd with neither content filter nor milter (options.plain): Postfix alone. */
  readonly plainPort: number | undefined;
  /** The smtpd whose mail goes through the filter at `filterPort` (one of the options' ports). */
  inPortFor(filterPort: number): number;
  /** The re-injection smtpd (content_filter cleared, XFORWARD allowed); the relay's next hop. */
  readonly reinjectPort: number;
  maillog(): string;
  /** Resolves with the maillog once it matches: postlogd writes it after the SMTP reply went out. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

export interface PostfixOptions {
  /** Where the content filter (the relay) listens; without it, inPort has no content filter. */
  readonly filterPort?: number;
  /**
   * Milters, each behind an inbound smtpd of its own (`inPortForMilter(port)`) with
   * `smtpd_milters = inet:127.0.0.1:<port>` and no content filter.
   */
  readonly milterPorts?: readonly number[];
  /** Also an inbound smtpd with neither content filter nor milter (`plainPort`). */
  readonly plain?: boolean;
  /** Extra main.cf lines (e.g. milter timeouts). */
  readonly mainCf?: string;
  /**
   * Further filters, each behind an inbound smtpd of its own (`inPortFor(port)`), all sharing one
   * queue, scan transport and re-injection listener: filters compared side by side in one Postfix.
   */
  readonly moreFilterPorts?: readonly number[];
  /**
   * maxproc of the re-injection smtpd (default 10, the scan transport's). Filters keep their
   * sessions to it open: with several filters, give each its own 10.
   */
  readonly reinjectProcesses?: number;
  /** Where Postfix delivers everything in the end (relayhost), e.g. the test sink. */
  readonly relayhostPort: number;
  readonly myhostname?: string;
}

const POSTFIX = '/usr/sbin/postfix';

/** True when Postfix can be used; in CI (process.env.CI) a missing Postfix is a failure, not a skip. */
export function postfixAvailable(): boolean {
  const ok = existsSync(POSTFIX) && existsSync('/usr/lib/postfix/sbin/master') && process.getuid?.() === 0;
  if (!ok && process.env.CI)
    throw new Error('Postfix (and root) is required in CI: .ci/run installs it with apt-get');
  return ok;
}

function mainCf(dir: string, o: PostfixOptions): string {
  return `compatibility_level = 3.6
queue_directory = ${dir}/spool
data_directory = ${dir}/data
maillog_file = ${dir}/maillog
maillog_file_prefixes = /var, /dev/stdout, /tmp, ${dir}
myhostname = ${o.myhostname ?? 'mx.test.local'}
mydomain = test.local
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled
alias_maps =
alias_database =
relay_domains =
relayhost = [127.0.0.1]:${o.relayhostPort}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
message_size_limit = 52428800
${o.filterPort !== undefined ? `content_filter = scan:[127.0.0.1]:${o.filterPort}` : ''}
receive_override_options = no_address_mappings
default_destination_concurrency_limit = 20
default_process_limit = 50
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
milter_protocol = 6
milter_default_action = tempfail
${o.mainCf ?? ''}
`;
}

/** One inbound smtpd per milter, and the plain one: no content filter on any of them. */
function milterListenersCf(milters: ReadonlyMap<number, number>, plainPort: number | undefined): string {
  return (
    [...milters]
      .map(
        ([milterPort, inPort]) =>
          `127.0.0.1:${inPort} inet n - n - - smtpd\n  -o content_filter=\n  -o smtpd_milters=inet:127.0.0.1:${milterPort}\n`,
      )
      .join('') +
    (plainPort !== undefined ? `127.0.0.1:${plainPort} inet n - n - - smtpd\n  -o content_filter=\n` : '')
  );
}

/** One inbound smtpd per further filter, its content_filter pointing there. */
function moreListenersCf(more: ReadonlyMap<number, number>): string {
  return [...more]
    .map(
      ([filterPort, inPort]) =>
        `127.0.0.1:${inPort} inet n - n - - smtpd\n  -o content_filter=scan:[127.0.0.1]:${filterPort}\n`,
    )
    .join('');
}

function masterCf(
  inPort: number,
  reinjectPort: number,
  more: ReadonlyMap<number, number>,
  reinjectProcesses: number,
  milters: string,
): string {
  return `127.0.0.1:${inPort} inet n - n - - smtpd
${moreListenersCf(more)}${milters}pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
scan       unix  - - n -  10 smtp
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
127.0.0.1:${reinjectPort} inet n - n - ${reinjectProcesses} smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
`;
}

/**
 * Starts a private Postfix (its own config, queue and log in a temp dir, loopback only) as in
 * environment.md 2.1: `postfix -c DIR start-fg`, ready when master logs "daemon started". Ports
 * are picked free and picked again if master cannot bind them.
 */
export async function startPostfix(options: PostfixOptions): Promise<PostfixInstance> {
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'sg-postfix-'));
    try {
      return await startOnce(dir, options);
    } catch (err) {
      lastError = err as Error;
      rmSync(dir, { recursive: true, force: true });
      if (!/Address already in use/.test(lastError.message)) throw lastError;
    }
  }
  throw lastError ?? new Error('postfix did not start');
}

async function startOnce(dir: string, options: PostfixOptions): Promise<PostfixInstance> {
  // The filters' ports are chosen before they listen: Postfix's own must differ from them too.
  const taken = new Set<number>([
    ...(options.filterPort !== undefined ? [options.filterPort] : []),
    ...(options.moreFilterPorts ?? []),
    ...(options.milterPorts ?? []),
  ]);
  const pick = async () => {
    let port = await freePort();
    while (taken.has(port)) port = await freePort();
    taken.add(port);
    return port;
  };
  const inPort = await pick();
  const reinjectPort = await pick();
  const more = new Map<number, number>();
  for (const filterPort of options.moreFilterPorts ?? []) more.set(filterPort, await pick());
  const milters = new Map<number, number>();
  for (const milterPort of options.milterPorts ?? []) milters.set(milterPort, await pick());
  const plainPort = options.plain ? await pick() : undefined;
  const etc = join(dir, 'etc');
  // mkdtemp makes the dir 0700; Postfix's unprivileged daemons must reach data/ and the queue.
  chmodSync(dir, 0o755);
  for (const d of ['etc', 'spool', 'data']) mkdirSync(join(dir, d), { recursive: true });
  const pw = spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' });
  const gw = spawnSync('id', ['-g', 'postfix'], { encoding: 'utf8' });
  chownSync(join(dir, 'data'), Number(pw.stdout.trim()), Number(gw.stdout.trim()));
  writeFileSync(join(etc, 'main.cf'), mainCf(dir, options));
  writeFileSync(
    join(etc, 'master.cf'),
    masterCf(
      inPort,
      reinjectPort,
      more,
      options.reinjectProcesses ?? 10,
      milterListenersCf(milters, plainPort),
    ),
  );
  writeFileSync(join(dir, 'maillog'), '');
  const check = spawnSync(POSTFIX, ['-c', etc, 'check'], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`postfix check failed: ${check.stderr}${readLog(dir)}`);

  const master: ChildProcess = spawn(POSTFIX, ['-c', etc, 'start-fg'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  master.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  master.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => master.once('exit', () => resolve()));

  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(limit);
      watcher.close();
      if (err) reject(err);
      else resolve();
    };
    const look = () => {
      const log = readLog(dir);
      if (/daemon started/.test(log)) finish();
      else if (/fatal:/.test(log)) finish(new Error(`postfix failed to start: ${log}${output}`));
    };
    // maillog is appended by postlogd; fs.watch wakes us on every write.
    const watcher = watchFile(join(dir, 'maillog'), look);
    const limit = setTimeout(
      () =>
        finish(new Error(`postfix did not report "daemon started" within 20 s: ${readLog(dir)}${output}`)),
      20_000,
    );
    void exited.then(() => {
      look();
      finish(new Error(`postfix master exited: ${readLog(dir)}${output}`));
    });
    look();
  });

  return {
    dir,
    inPort,
    reinjectPort,
    plainPort,
    inPortForMilter(milterPort) {
      const port = milters.get(milterPort);
      if (port === undefined) throw new Error(`no inbound smtpd for milter port ${milterPort}`);
      return port;
    },
    inPortFor(filterPort) {
      const port = filterPort === options.filterPort ? inPort : more.get(filterPort);
      if (port === undefined) throw new Error(`no inbound smtpd for filter port ${filterPort}`);
      return port;
    },
    maillog: () => readLog(dir),
    waitForLog: (pattern, timeoutMs = 10_000) =>
      new Promise<string>((resolve, reject) => {
        const look = () => {
          const log = readLog(dir);
          if (!pattern.test(log)) return;
          clearTimeout(limit);
          watcher.close();
          resolve(log);
        };
        const watcher = watchFile(join(dir, 'maillog'), look);
        const limit = setTimeout(() => {
          watcher.close();
          reject(
            new Error(`maillog did not match ${String(pattern)} within ${timeoutMs} ms:\n${readLog(dir)}`),
          );
        }, timeoutMs);
        look();
      }),
    async stop() {
      spawnSync(POSTFIX, ['-c', etc, 'stop'], { encoding: 'utf8' });
      const timer = setTimeout(() => master.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readLog(dir: string): string {
  try {
    return readFileSync(join(dir, 'maillog'), 'utf8');
  } catch {
    return '';
  }
}

function watchFile(path: string, onChange: () => void): { close(): void } {
  const w = watch(path, () => onChange());
  return { close: () => w.close() };
}
