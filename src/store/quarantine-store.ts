import { createReadStream, mkdirSync, rmSync } from 'node:fs';
import { pipeline as pipelineCb, Readable } from 'node:stream';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { SandgateError } from '../core/errors.js';
import { decodeHeaderText, searchFold } from '../mime/header-text.js';
import type { QuarantineEntry, QuarantineStore } from '../core/ports.js';
import type { QuarantineFilter, QuarantineItem, QuarantineRecord } from '../core/state-records.js';
import type { StateDb } from './db.js';
import { fsyncDir, PARTIAL, writeDurably } from './durable-file.js';
import { recoverQuarantine } from './quarantine-recovery.js';
import { fromRow, likeEscape, quarantineRecord, type QuarantineRow } from './quarantine-row.js';

export type { QuarantineFilter, QuarantineItem, QuarantineRecord } from '../core/state-records.js';

/**
 * Writes quarantine items durably: the gzipped original and a JSON sidecar, each written to a
 * temporary name, fsynced and renamed, the directory fsynced, then the index row inserted. A crash
 * at any point leaves either a complete item (recovered into the index on start) or temporary
 * files that recovery removes: never a half item.
 */
export class SqliteQuarantineStore implements QuarantineStore {
  private readonly insertStmt;

  constructor(
    private readonly db: StateDb,
    readonly dir: string,
    private readonly now: () => number = Date.now,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    db.function('sg_fold', { deterministic: true }, (v: unknown) =>
      typeof v === 'string' ? searchFold(v) : null,
    );
    this.insertStmt = db.prepare(
      `INSERT OR IGNORE INTO quarantine (id, msg_id, created_at, front_end, sender, recipients, client, helo, subject,
         subject_text, verdict, action, reason, threats, outcomes, content_key, size, stored_size, file)
       VALUES (@id, @msgId, @createdAt, @frontEnd, @sender, @recipients, @client, @helo, @subject,
         @subjectText, @verdict, @action, @reason, @threats, @outcomes, @contentKey, @size, @storedSize, @file)`,
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
      const storedSize = await writeDurably(emlPath, (out) =>
        pipeline(entry.message.open(), createGzip(), out),
      );
      const record = quarantineRecord(entry, { id, createdAt, storedSize, file });
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
  async recover(): Promise<{ indexed: number; removed: number }> {
    return recoverQuarantine({ db: this.db, dir: this.dir, now: this.now, index: (r) => this.index(r) });
  }
  async count(): Promise<number> {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM quarantine').get() as { n: number }).n;
  }

  /** Items newest first, filtered; `limit` defaults to 100 (at most 10 000). */
  async list(filter: QuarantineFilter = {}): Promise<QuarantineItem[]> {
    const where: string[] = [];
    const params: Record<string, string | number> = {};
    if (filter.since !== undefined) {
      where.push('created_at >= @since');
      params.since = filter.since;
    }
    if (filter.before !== undefined) {
      where.push('created_at < @before');
      params.before = filter.before;
    }
    if (filter.verdict !== undefined) {
      where.push('verdict = @verdict');
      params.verdict = filter.verdict;
    }
    if (filter.sender !== undefined) {
      where.push("sender LIKE @sender ESCAPE '\\'");
      params.sender = `%${likeEscape(filter.sender.toLowerCase())}%`;
    }
    if (filter.recipient !== undefined) {
      where.push("lower(recipients) LIKE @rcpt ESCAPE '\\'");
      params.rcpt = `%${likeEscape(filter.recipient.toLowerCase())}%`;
    }
    if (filter.subject !== undefined) {
      where.push("sg_fold(subject_text) LIKE @subject ESCAPE '\\'");
      params.subject = `%${likeEscape(searchFold(filter.subject))}%`;
    }
    if (filter.released !== undefined)
      where.push(filter.released ? 'released_at IS NOT NULL' : 'released_at IS NULL');
    params.limit = Math.max(1, Math.min(filter.limit ?? 100, 10_000));
    const sql = `SELECT * FROM quarantine ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY created_at DESC, id DESC LIMIT @limit`;
    return (this.db.prepare(sql).all(params) as QuarantineRow[]).map(fromRow);
  }

  /** The item, or ERR_QUARANTINE_NOT_FOUND. */
  async get(id: string): Promise<QuarantineItem> {
    const row = this.db.prepare<[string], QuarantineRow>('SELECT * FROM quarantine WHERE id = ?').get(id);
    if (row === undefined) {
      throw new SandgateError('ERR_QUARANTINE_NOT_FOUND', `no quarantine item "${id}"`, {
        details: { id },
      });
    }
    return fromRow(row);
  }

  /** A fresh stream over the original message bytes (decompressed). */
  openOriginal(item: Pick<QuarantineItem, 'id' | 'file'>): Readable {
    const gunzip = createGunzip();
    // pipeline: a consumer that stops early (destroys the gunzip) also closes the file.
    pipelineCb(createReadStream(this.pathOf(item.file)), gunzip, () => undefined);
    return gunzip;
  }

  /** Removes an item: the index row first (it disappears from every list at once), then its files. */
  async delete(id: string): Promise<QuarantineItem> {
    const item = await this.get(id);
    this.drop(item);
    return item;
  }

  /** Records who released an item, when and where to. Returns false when it no longer exists. */
  async markReleased(id: string, release: { by: string; to: string; at?: number }): Promise<boolean> {
    const r = this.db
      .prepare('UPDATE quarantine SET released_at = @at, released_by = @by, released_to = @to WHERE id = @id')
      .run({ id, at: release.at ?? this.now(), by: release.by, to: release.to });
    return r.changes > 0;
  }

  /**
   * Retention: removes items older than maxAgeMs, then the oldest until the stored bytes fit in
   * maxTotalBytes. Returns the removed ids, oldest first.
   */
  async enforceRetention(limits: { maxAgeMs: number; maxTotalBytes: number }): Promise<string[]> {
    const removed: string[] = [];
    const cutoff = this.now() - limits.maxAgeMs;
    const old = this.db
      .prepare<[number], QuarantineRow>(
        'SELECT * FROM quarantine WHERE created_at < ? ORDER BY created_at, id',
      )
      .all(cutoff);
    for (const row of old) {
      this.drop(fromRow(row));
      removed.push(row.id);
    }
    let total = (
      this.db.prepare('SELECT COALESCE(SUM(stored_size), 0) AS n FROM quarantine').get() as { n: number }
    ).n;
    if (total <= limits.maxTotalBytes) return removed;
    const oldest = this.db
      .prepare<[], QuarantineRow>('SELECT * FROM quarantine ORDER BY created_at, id')
      .iterate();
    const victims: QuarantineRow[] = [];
    for (const row of oldest) {
      if (total <= limits.maxTotalBytes) break;
      victims.push(row);
      total -= row.stored_size;
    }
    for (const row of victims) {
      this.drop(fromRow(row));
      removed.push(row.id);
    }
    return removed;
  }

  /** Total stored (compressed) bytes of every item. */
  async totalStoredBytes(): Promise<number> {
    return (
      this.db.prepare('SELECT COALESCE(SUM(stored_size), 0) AS n FROM quarantine').get() as { n: number }
    ).n;
  }

  private pathOf(file: string): string {
    // The index holds relative names we wrote; refuse anything that would leave the directory.
    if (!/^\d{4}-\d{2}-\d{2}\/[\w.-]+\.eml\.gz$/.test(file)) {
      throw new SandgateError('ERR_QUARANTINE_NOT_FOUND', `quarantine file name not understood: ${file}`, {
        details: { file },
      });
    }
    return join(this.dir, file);
  }

  /**
   * Sidecar, then row, then message file: a crash in between never brings a deleted item back
   * (recovery indexes only sidecars) and leaves at most a message file that recovery removes.
   */
  private drop(item: Pick<QuarantineItem, 'id' | 'file'>): void {
    const eml = this.pathOf(item.file);
    rmSync(eml.replace(/\.eml\.gz$/, '.json'), { force: true });
    this.db.prepare('DELETE FROM quarantine WHERE id = ?').run(item.id);
    rmSync(eml, { force: true });
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
      subjectText: r.subject !== undefined ? decodeHeaderText(r.subject) : null,
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
