import { createWriteStream, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { SandgateError } from '../core/errors.js';
import type { Envelope } from '../core/message.js';
import type { QuarantineEntry, QuarantineWriter } from '../core/ports.js';
import type { StateDb } from './db.js';

/** What the sidecar JSON beside each item holds; the index row can always be rebuilt from it. */
export interface QuarantineRecord {
  readonly id: string;
  readonly msgId: string;
  readonly createdAt: number;
  readonly envelope: Envelope;
  readonly subject?: string;
  readonly verdict: string;
  readonly action: string;
  readonly reason: string;
  readonly threats: readonly string[];
  readonly outcomes: readonly unknown[];
  readonly contentKey: string;
  readonly size: number;
  readonly storedSize: number;
  /** Path of the compressed message, relative to the quarantine directory. */
  readonly file: string;
}

const PARTIAL = '.partial';
/** Files younger than this may belong to a write still in progress in another process. */
const RECOVERY_GRACE_MS = 60_000;

/**
 * Writes quarantine items durably: the gzipped original and a JSON sidecar, each written to a
 * temporary name, fsynced and renamed, the directory fsynced, then the index row inserted. A crash
 * at any point leaves either a complete item (recovered into the index on start) or temporary
 * files that recovery removes: never a half item.
 */
export class QuarantineStore implements QuarantineWriter {
  private readonly insertStmt;

  constructor(
    private readonly db: StateDb,
    readonly dir: string,
    private readonly now: () => number = Date.now,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    this.insertStmt = db.prepare(
      `INSERT OR IGNORE INTO quarantine (id, msg_id, created_at, front_end, sender, recipients, client, helo, subject,
         verdict, action, reason, threats, outcomes, content_key, size, stored_size, file)
       VALUES (@id, @msgId, @createdAt, @frontEnd, @sender, @recipients, @client, @helo, @subject,
         @verdict, @action, @reason, @threats, @outcomes, @contentKey, @size, @storedSize, @file)`,
    );
  }

  async put(entry: QuarantineEntry): Promise<string> {
    const createdAt = this.now();
    const id = entry.message.msgId;
    const day = new Date(createdAt).toISOString().slice(0, 10);
    const dayDir = join(this.dir, day);
    const file = `${day}/${id}.eml.gz`;
    const emlPath = join(this.dir, file);
    const jsonPath = join(dayDir, `${id}.json`);
    try {
      mkdirSync(dayDir, { recursive: true, mode: 0o750 });
      const storedSize = await writeDurably(emlPath, (out) => pipeline(entry.message.open(), createGzip(), out));
      const record: QuarantineRecord = {
        id,
        msgId: entry.message.msgId,
        createdAt,
        envelope: entry.message.envelope,
        ...(entry.subject !== undefined ? { subject: entry.subject } : {}),
        verdict: entry.decision.verdict,
        action: entry.decision.action,
        reason: entry.decision.reason,
        threats: entry.decision.threats,
        outcomes: entry.outcomes,
        contentKey: entry.contentKey,
        size: entry.message.size,
        storedSize,
        file,
      };
      await writeDurably(jsonPath, (out) => pipeline(Readable.from([JSON.stringify(record, null, 2)]), out));
      await fsyncDir(dayDir);
      this.index(record);
      return id;
    } catch (cause) {
      await rm(emlPath + PARTIAL, { force: true });
      await rm(jsonPath + PARTIAL, { force: true });
      throw new SandgateError('ERR_QUARANTINE_WRITE', `cannot write quarantine item ${id}`, {
        cause,
        details: { dir: this.dir },
      });
    }
  }

  /**
   * Start-up repair: indexes complete items whose row is missing (a crash after the files, before
   * the row), removes temporary files and message files without a sidecar older than a grace period.
   */
  recover(): { indexed: number; removed: number } {
    let indexed = 0;
    let removed = 0;
    const known = this.db.prepare<[string], { id: string }>('SELECT id FROM quarantine WHERE id = ?');
    const cutoff = this.now() - RECOVERY_GRACE_MS;
    for (const day of safeReaddir(this.dir)) {
      const dayDir = join(this.dir, day);
      if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) continue;
      const names = new Set(safeReaddir(dayDir));
      for (const name of names) {
        const path = join(dayDir, name);
        const old = statSync(path).mtimeMs < cutoff;
        if (name.endsWith(PARTIAL)) {
          if (old) {
            rmSync(path, { force: true });
            removed++;
          }
        } else if (name.endsWith('.json')) {
          const record = JSON.parse(readFileSync(path, 'utf8')) as QuarantineRecord;
          if (known.get(record.id) === undefined && names.has(`${record.id}.eml.gz`)) {
            this.index(record);
            indexed++;
          }
        } else if (name.endsWith('.eml.gz') && !names.has(name.replace(/\.eml\.gz$/, '.json')) && old) {
          rmSync(path, { force: true });
          removed++;
        }
      }
    }
    return { indexed, removed };
  }

  count(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM quarantine').get() as { n: number }).n;
  }

  private index(r: QuarantineRecord): void {
    this.insertStmt.run({
      id: r.id,
      msgId: r.msgId,
      createdAt: r.createdAt,
      frontEnd: r.envelope.frontEnd,
      sender: r.envelope.sender,
      recipients: JSON.stringify(r.envelope.recipients),
      client: r.envelope.clientAddress ?? null,
      helo: r.envelope.heloName ?? null,
      subject: r.subject ?? null,
      verdict: r.verdict,
      action: r.action,
      reason: r.reason,
      threats: JSON.stringify(r.threats),
      outcomes: JSON.stringify(r.outcomes),
      contentKey: r.contentKey,
      size: r.size,
      storedSize: r.storedSize,
      file: r.file,
    });
  }
}

/**
 * Writes to `<path>.partial` (the stream is flushed to disk before its descriptor closes), then
 * renames it to `path`; returns the bytes written.
 */
export async function writeDurably(path: string, write: (out: Writable) => Promise<void>): Promise<number> {
  const tmp = path + PARTIAL;
  const out = createWriteStream(tmp, { flags: 'wx', mode: 0o600, flush: true });
  await write(out);
  const size = statSync(tmp).size;
  await rename(tmp, path);
  return size;
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
