import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import {
  createReadStream,
  createWriteStream,
  fsyncSync,
  openSync,
  closeSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { createGunzip, createGzip } from 'node:zlib';
import { SandgateError } from '../core/errors.js';
import { printable } from '../core/text.js';

/**
 * The file `sandgate state export` writes and `sandgate state import --from FILE` reads: a single
 * host's SQLite state, portable and versioned. gzip over JSON lines:
 *
 *   {"format":"sandgate-state-export","version":1,"createdAt":…,"source":{…}}   the header
 *   {"t":"verdict_cache","row":{…}}            one line per row of the copied tables
 *   {"t":"quarantine","item":{…}}              a quarantine item, then its gzipped message as it is
 *   {"t":"data","b64":"…"}                     in pieces of DATA_PIECE bytes (base64),
 *   {"t":"quarantine_end","bytes":N,"sha256":…} and their count and digest
 *   {"t":"end","lines":N,"sha256":…}           the trailer: lines before it and their SHA-256
 *
 * A line is at most MAX_LINE bytes, so reading holds one line (and one piece) at a time. gzip's CRC,
 * the per-item digests and the trailer's digest make a truncated or altered file fail as a whole.
 */
export const ARCHIVE_FORMAT = 'sandgate-state-export';
export const ARCHIVE_VERSION = 1;
/** Raw bytes of a quarantined message per `data` line. */
export const DATA_PIECE = 192 * 1024;
const MAX_LINE = 1024 * 1024;

/** The tables of rows the archive carries (the quarantine has records of its own). */
export const ARCHIVE_TABLES = [
  'verdict_cache',
  'first_failure',
  'scanner_version',
  'pt_task',
  'allow_hash',
] as const;
export type ArchiveTable = (typeof ARCHIVE_TABLES)[number];

export interface ArchiveHeader {
  readonly format: typeof ARCHIVE_FORMAT;
  readonly version: number;
  readonly createdAt: number;
  readonly source: { readonly stateDir: string; readonly schemaVersion: number; readonly host: string };
}

export type ArchiveRecord =
  | { readonly t: ArchiveTable; readonly row: Record<string, unknown> }
  | { readonly t: 'quarantine'; readonly item: Record<string, unknown> }
  | { readonly t: 'data'; readonly bytes: Buffer }
  | { readonly t: 'quarantine_end' };

/** Writes an archive to `file` through a temporary name: the file appears whole, or not at all. */
export class ArchiveWriter {
  private readonly tmp: string;
  private readonly gzip = createGzip();
  private readonly out;
  private readonly digest = createHash('sha256');
  private lines = 0;
  private failed: Error | undefined;

  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    header: Omit<ArchiveHeader, 'format' | 'version'>,
  ) {
    this.tmp = `${file}.${process.pid}.tmp`;
    this.out = createWriteStream(this.tmp, { flags: 'wx', mode: 0o600 });
    this.out.on('error', (err) => (this.failed ??= err));
    this.gzip.on('error', (err) => (this.failed ??= err));
    this.gzip.pipe(this.out);
    this.pending = this.line({ format: ARCHIVE_FORMAT, version: ARCHIVE_VERSION, ...header });
  }

  async row(t: ArchiveTable, row: Record<string, unknown>): Promise<void> {
    await this.line({ t, row });
  }

  async quarantine(item: object, gzipped: AsyncIterable<Buffer>): Promise<void> {
    await this.line({ t: 'quarantine', item });
    const hash = createHash('sha256');
    let bytes = 0;
    let held: Buffer = Buffer.alloc(0);
    for await (const chunk of gzipped) {
      held = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
      while (held.length >= DATA_PIECE) {
        const piece = held.subarray(0, DATA_PIECE);
        held = held.subarray(DATA_PIECE);
        hash.update(piece);
        bytes += piece.length;
        await this.line({ t: 'data', b64: piece.toString('base64') });
      }
    }
    if (held.length > 0) {
      hash.update(held);
      bytes += held.length;
      await this.line({ t: 'data', b64: held.toString('base64') });
    }
    await this.line({ t: 'quarantine_end', bytes, sha256: hash.digest('hex') });
  }

  /** Writes the trailer, flushes and fsyncs, and renames the file into place. */
  async finish(): Promise<{ lines: number }> {
    await this.pending;
    const lines = this.lines;
    const text = `${JSON.stringify({ t: 'end', lines, sha256: this.digest.digest('hex') })}\n`;
    this.gzip.end(text);
    await once(this.out, 'close');
    if (this.failed !== undefined) throw this.failed;
    const fd = openSync(this.tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(this.tmp, this.file);
    return { lines };
  }

  /** Gives up: the partial file is removed. */
  async abort(): Promise<void> {
    this.gzip.destroy();
    this.out.destroy();
    await once(this.out, 'close').catch(() => undefined);
    rmSync(this.tmp, { force: true });
  }

  private async line(value: object): Promise<void> {
    await this.pending;
    if (this.failed !== undefined) throw this.failed;
    const text = `${JSON.stringify(value)}\n`;
    this.digest.update(text);
    this.lines++;
    if (!this.gzip.write(text)) await once(this.gzip, 'drain');
  }
}

/** An error about the archive `file`, at line `line`: what is wrong with it. */
export function archiveError(file: string, line: number, problem: string, cause?: unknown): SandgateError {
  return new SandgateError(
    'ERR_STATE_ARCHIVE',
    `${file}: not a complete sandgate state export${line > 0 ? ` (line ${line})` : ''}: ${problem}; nothing was imported from it`,
    { ...(cause !== undefined ? { cause } : {}), details: { file, line, problem } },
  );
}

/** The lines of the gunzipped file, each at most MAX_LINE bytes, with their 1-based numbers. */
async function* lines(file: string): AsyncGenerator<{ text: string; n: number }> {
  const gunzip = createGunzip();
  const input = createReadStream(file);
  input.on('error', (err) => gunzip.destroy(err));
  input.pipe(gunzip);
  let held = '';
  let n = 0;
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      held += chunk.toString('latin1');
      let at: number;
      while ((at = held.indexOf('\n')) >= 0) {
        yield { text: Buffer.from(held.slice(0, at), 'latin1').toString('utf8'), n: ++n };
        held = held.slice(at + 1);
      }
      if (held.length > MAX_LINE) throw archiveError(file, n + 1, `a line longer than ${MAX_LINE} bytes`);
    }
  } catch (err) {
    if (err instanceof SandgateError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') {
      throw new SandgateError('ERR_BAD_REQUEST', `--from ${file}: cannot read it (${code})`, {
        cause: err,
        details: { file },
      });
    }
    throw archiveError(
      file,
      n + 1,
      code === 'Z_BUF_ERROR'
        ? 'the file ends early (truncated)'
        : `not readable gzip (${printable(err instanceof Error ? err.message : String(err), { max: 120 })})`,
      err,
    );
  } finally {
    input.destroy();
  }
  if (held !== '') yield { text: Buffer.from(held, 'latin1').toString('utf8'), n: n + 1 };
}

/**
 * Reads and checks an archive record by record: the header (format, version), every line, each
 * quarantine item's byte count and digest, and the trailer's line count and digest. Any problem is
 * ERR_STATE_ARCHIVE (ERR_STATE_ARCHIVE_VERSION for another format version) naming the file and line.
 */
export async function* readArchive(file: string): AsyncGenerator<ArchiveRecord, ArchiveHeader> {
  const digest = createHash('sha256');
  let header: ArchiveHeader | undefined;
  let item: { hash: Hash; bytes: number } | undefined;
  let count = 0;
  let ended = false;
  for await (const { text, n } of lines(file)) {
    if (ended) throw archiveError(file, n, 'lines after the end record');
    let value: Record<string, unknown>;
    try {
      value = JSON.parse(text) as Record<string, unknown>;
      if (typeof value !== 'object' || value === null || Array.isArray(value))
        throw new Error('not an object');
    } catch (err) {
      throw archiveError(
        file,
        n,
        header === undefined ? 'not a sandgate state export (no header)' : 'a line that is not a JSON object',
        err,
      );
    }
    if (header === undefined) {
      if (value.format !== ARCHIVE_FORMAT)
        throw archiveError(file, n, 'not a sandgate state export (no header)');
      if (value.version !== ARCHIVE_VERSION) {
        throw new SandgateError(
          'ERR_STATE_ARCHIVE_VERSION',
          `${file}: a sandgate state export of format version ${printable(String(value.version))}; this build reads version ${ARCHIVE_VERSION}; nothing was imported from it`,
          { details: { file, version: String(value.version), supported: ARCHIVE_VERSION } },
        );
      }
      header = value as unknown as ArchiveHeader;
      digest.update(`${text}\n`);
      count++;
      continue;
    }
    const t = value.t;
    if (t === 'end') {
      if (item !== undefined) throw archiveError(file, n, 'a quarantine item without its end');
      if (value.lines !== count || value.sha256 !== digest.digest('hex')) {
        throw archiveError(file, n, 'the end record does not match the lines before it (altered)');
      }
      ended = true;
      continue;
    }
    digest.update(`${text}\n`);
    count++;
    if (t === 'data') {
      if (item === undefined || typeof value.b64 !== 'string')
        throw archiveError(file, n, 'data outside a quarantine item');
      const bytes = Buffer.from(value.b64, 'base64');
      item.hash.update(bytes);
      item.bytes += bytes.length;
      yield { t: 'data', bytes };
    } else if (t === 'quarantine_end') {
      if (item === undefined) throw archiveError(file, n, 'a quarantine end without an item');
      if (value.bytes !== item.bytes || value.sha256 !== item.hash.digest('hex')) {
        throw archiveError(file, n, 'a quarantined message whose bytes do not match its digest');
      }
      item = undefined;
      yield { t: 'quarantine_end' };
    } else if (item !== undefined) {
      throw archiveError(file, n, 'a record inside a quarantine item');
    } else if (t === 'quarantine') {
      if (typeof value.item !== 'object' || value.item === null)
        throw archiveError(file, n, 'a quarantine record without its item');
      item = { hash: createHash('sha256'), bytes: 0 };
      yield { t: 'quarantine', item: value.item as Record<string, unknown> };
    } else if ((ARCHIVE_TABLES as readonly unknown[]).includes(t)) {
      if (typeof value.row !== 'object' || value.row === null)
        throw archiveError(file, n, `a ${String(t)} record without its row`);
      yield { t: t as ArchiveTable, row: value.row as Record<string, unknown> };
    } else {
      throw archiveError(file, n, `an unknown record type ${printable(String(t), { max: 40 })}`);
    }
  }
  if (header === undefined) throw archiveError(file, 0, 'the file is empty');
  if (!ended) throw archiveError(file, count + 1, 'the file ends early (truncated: no end record)');
  return header;
}
