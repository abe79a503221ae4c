import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

/**
 * Who owns a spool file, and what happens to the files of owners that are gone.
 *
 * Every spool file's name carries its owner: `<stem>.o<pid>s<start>h<host>.<ext>`, where `start`
 * is the process's start time (field 22 of /proc/<pid>/stat, clock ticks since boot) and `host`
 * the first 8 hex digits of the SHA-256 of the host name. A pid alone is not enough: after a kill
 * -9 the pid may be reused by an unrelated process. Where there is no /proc the name is
 * `<stem>.o<pid>h<host>.<ext>` and liveness is only `kill(pid, 0)`. The host part keeps one
 * container from judging another's files by pids it cannot see (two containers sharing a state
 * volume each have their own pid 1, but by default their own host name); a restarted container
 * keeps its host name, so its new process removes what the killed one left.
 *
 * A live process removes its spool files on every exit path it sees: dispose() in `finally`, and
 * the registry below on process 'exit' (normal end, process.exit() from a signal handler, an
 * uncaught exception). What no process can see (kill -9, a power cut) is removed by the next start
 * of any sandgate command that spools: sweepSpoolDir() removes every file under `<stateDir>/spool`
 * whose owner is no longer alive, at any age.
 */

/** The owner a spool file's name carries. */
export interface SpoolOwner {
  readonly pid: number;
  /** Start time of the process (clock ticks since boot); undefined where /proc is missing. */
  readonly start?: string;
  /** 8 hex digits of the SHA-256 of the owner's host name; undefined: this host. */
  readonly host?: string;
}

/**
 * Files whose owner cannot be judged here (names from before owners were part of them, files of
 * another host name) are removed once they are this old.
 */
export const UNJUDGED_SPOOL_MAX_AGE_MS = 24 * 60 * 60 * 1000;

/** `<stem>.o<pid>[s<start>][h<host>].<ext>`: the stem has no dot (a msgId, `part-<hex>`). */
const TAGGED = /^[^.]+\.o(\d{1,10})(?:s(\d{1,20}))?(?:h([0-9a-f]{8}))?\.[a-z]{1,8}$/;
/** A message spool before owners were named: `<msgId>.eml`. */
const LEGACY_MESSAGE = /^sg-[0-9a-z]+-[0-9a-f]+\.eml$/;
/** A part spool before owners were named: `part-<pid>-<hex>.bin` (the pid alone proves nothing). */
const LEGACY_PART = /^part-\d{1,10}-[0-9a-f]+\.bin$/;

/**
 * Field 22 (starttime) of /proc/<pid>/stat; undefined when there is no /proc, no such process,
 * or it cannot be read.
 */
export function processStartTime(pid: number | 'self'): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // Field 2, the command name, is in parentheses and may itself hold blanks and parentheses:
  // the fields after the last ')' start with field 3.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const start = fields[22 - 3];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/** This process: its start time and host tag, read once. */
let self: { readonly start: string | undefined; readonly host: string; readonly tag: string } | undefined;

function own(): { readonly start: string | undefined; readonly host: string; readonly tag: string } {
  if (self === undefined) {
    const start = processStartTime('self');
    const host = hostTag();
    self = { start, host, tag: format(process.pid, start, host) };
  }
  return self;
}

function format(pid: number, start: string | undefined, host: string): string {
  return `o${pid}${start !== undefined ? `s${start}` : ''}h${host}`;
}

/** The host part of an owner tag: 8 hex digits of the SHA-256 of the host name. */
export function hostTag(name = hostname()): string {
  return createHash('sha256').update(name).digest('hex').slice(0, 8);
}

/** This process's owner tag, `o<pid>s<start>h<host>` (`o<pid>h<host>` without /proc). */
export function ownerTag(): string {
  return own().tag;
}

/** The tag of an owner (this host's when `host` is not given). */
export function tagOf(owner: SpoolOwner): string {
  return format(owner.pid, owner.start, owner.host ?? own().host);
}

/** The name of a new spool file of this process: `<stem>.<owner>.<ext>` (stem without dots). */
export function spoolFileName(stem: string, ext: string): string {
  return `${stem}.${ownerTag()}.${ext}`;
}

/** The owner named in a spool file's name; undefined for any other name. */
export function ownerOf(name: string): SpoolOwner | undefined {
  const m = TAGGED.exec(name);
  if (m === null) return undefined;
  return {
    pid: Number(m[1]),
    ...(m[2] !== undefined ? { start: m[2] } : {}),
    ...(m[3] !== undefined ? { host: m[3] } : {}),
  };
}

/** Whether the owner ran under this host name (so its pid and start time can be judged here). */
function sameHost(owner: SpoolOwner): boolean {
  return owner.host === undefined || owner.host === own().host;
}

/** Whether a process with this pid exists (kill(pid, 0); EPERM: it exists, another user's). */
function pidExists(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Whether an owner of this host is still running: its pid exists and, where /proc tells, with the
 * same start time (otherwise the pid was reused). A process whose start time cannot be read but
 * which exists counts as alive: its file is kept rather than taken from under it.
 */
export function ownerAlive(owner: SpoolOwner): boolean {
  if (owner.pid === process.pid) return owner.start === own().start;
  const start = processStartTime(owner.pid);
  if (start === undefined) return pidExists(owner.pid);
  return owner.start === undefined || owner.start === start;
}

/** The time of the last boot (epoch ms) from /proc/stat; undefined without /proc. */
function bootTimeMs(): number | undefined {
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'latin1'));
    return m ? Number(m[1]) * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export interface SweepResult {
  /** Files removed: owner gone (or, where it cannot be judged, old enough). */
  readonly removed: number;
  readonly removedBytes: number;
  /** Files kept: a live owner, a young file whose owner cannot be judged, a name not a spool file's. */
  readonly kept: number;
}

/**
 * Removes, under `dir` and its subdirectories, every spool file of this host name whose owner is
 * no longer alive, at any age: pid gone, pid reused (another start time), or written before the
 * last boot (a pid and start time can repeat after a reboot). Files whose owner cannot be judged
 * here go once older than UNJUDGED_SPOOL_MAX_AGE_MS: another host name's (its own next start
 * removes them sooner), and the old names without an owner (a younger one may belong to a
 * process of the previous version still finishing its message). Names that are not a spool
 * file's are left alone.
 * Symbolic links are not followed. Call it with `<stateDir>/spool` only, never with the queue or
 * the quarantine.
 */
export function sweepSpoolDir(dir: string, now = Date.now()): SweepResult {
  const boot = bootTimeMs();
  let removed = 0;
  let removedBytes = 0;
  let kept = 0;
  const visit = (at: string) => {
    let entries;
    try {
      entries = readdirSync(at, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) {
        visit(path);
        continue;
      }
      if (!entry.isFile()) continue;
      let stat;
      try {
        stat = statSync(path);
      } catch {
        continue;
      }
      if (!ownerGone(entry.name, stat.mtimeMs, now, boot)) {
        kept++;
        continue;
      }
      try {
        rmSync(path, { force: true });
        removed++;
        removedBytes += stat.size;
      } catch {
        kept++;
      }
    }
  };
  visit(dir);
  return { removed, removedBytes, kept };
}

function ownerGone(name: string, mtimeMs: number, now: number, boot: number | undefined): boolean {
  const old = now - mtimeMs > UNJUDGED_SPOOL_MAX_AGE_MS;
  const owner = ownerOf(name);
  if (owner !== undefined) {
    if (!sameHost(owner)) return old;
    if (boot !== undefined && mtimeMs < boot) return true;
    return !ownerAlive(owner);
  }
  return (LEGACY_PART.test(name) || LEGACY_MESSAGE.test(name)) && old;
}

// ---------------------------------------------------------------------------------------------
// The files this process has open: removed on process 'exit' if their owner has not done so.

const live = new Set<string>();
let exitHook = false;

/** Records a spool file this process just created; removed at 'exit' unless released first. */
export function registerSpoolFile(path: string): void {
  live.add(path);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', removeLiveSpoolFiles);
  }
}

/** The owner removed the file itself. */
export function releaseSpoolFile(path: string): void {
  live.delete(path);
}

/** Removes every registered file at once, synchronously (the 'exit' hook; also for tests). */
export function removeLiveSpoolFiles(): void {
  for (const path of live) {
    try {
      rmSync(path, { force: true });
    } catch {
      // Nothing more can be done while exiting; the next start sweeps it.
    }
  }
  live.clear();
}

/** How many spool files this process has registered and not yet removed (tests). */
export function liveSpoolFileCount(): number {
  return live.size;
}
