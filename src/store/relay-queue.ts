import { mkdirSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SandgateError } from '../core/errors.js';
import type { MessageSource } from '../core/message.js';
import type { RelayQueueStore } from '../core/ports.js';
import type {
  PreparedItem,
  QueueEnvelope,
  QueueItem,
  QueueKind,
  QueueParams,
  QueueRecipient,
  QueueScan,
  QueueStats,
  RecipientState,
} from '../core/state-records.js';
import { FileMessage } from '../mime/spool.js';
import type { StateDb } from './db.js';
import { PARTIAL } from './durable-file.js';
import { durableWriter, QUEUE_FILE_SUFFIX as SUFFIX, readQueueHead } from './relay-queue-file.js';
import { recoverRelayQueue } from './relay-queue-recovery.js';

export type {
  PreparedItem,
  QueueEnvelope,
  QueueItem,
  QueueKind,
  QueueParams,
  QueueRecipient,
  QueueScan,
  QueueStats,
  RecipientState,
} from '../core/state-records.js';

/** Where the message bytes are written; tests inject a failing one to simulate a broken disk. */
export interface QueueFileWriter {
  write(path: string, head: Buffer, body: AsyncIterable<Buffer>): Promise<void>;
}

interface ItemRow {
  id: string;
  kind: string;
  created_at: number;
  sender: string;
  size: number;
  file: string;
  data_offset: number;
  envelope: string;
  scan: string | null;
  attempts: number;
  next_attempt_at: number;
  last_error: string | null;
}

interface RcptRow {
  idx: number;
  address: string;
  params: string;
  state: string;
  reply: string | null;
}

/**
 * The relay's durable queue (queue mode). Accepting a message: the envelope (one JSON line) and the
 * bytes go to `<id>.msg.partial`, which is fsynced, renamed to `<id>.msg`, the directory fsynced,
 * and only then the index row (message + one row per recipient) is committed. The relay answers
 * 250 after that commit. The fsynced file is the durable record; a file without a row (a crash
 * between the two) is indexed by start-up recovery, so nothing that got a 250 is lost, even to a
 * power cut (the rows use the database's WAL with synchronous = NORMAL). Per-recipient delivery
 * state lives in the rows, so a restart resumes where the last delivery attempt ended. Deleting:
 * row first, then the file (a crash between the two: the file is indexed again and delivered again,
 * at least once).
 */
export class SqliteRelayQueueStore implements RelayQueueStore {
  private readonly writer: QueueFileWriter;
  private counters: { messages: number; bytes: number } = { messages: 0, bytes: 0 };

  constructor(
    private readonly db: StateDb,
    readonly dir: string,
    options: { writer?: QueueFileWriter } = {},
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    this.writer = options.writer ?? durableWriter;
    this.countersFromStats();
  }

  /** Writes the message file durably (not yet accepted: insert() does that). */
  async prepare(
    source: MessageSource,
    envelope: QueueEnvelope,
    options: { kind?: QueueKind; now?: number } = {},
  ): Promise<PreparedItem> {
    const id = source.msgId;
    if (!/^[A-Za-z0-9._-]{1,100}$/.test(id)) throw new Error(`not a safe queue id: ${id}`);
    const createdAt = options.now ?? Date.now();
    const kind = options.kind ?? 'message';
    const file = `${id}${SUFFIX}`;
    const head = Buffer.from(`${JSON.stringify({ id, kind, createdAt, envelope })}\n`, 'utf8');
    const path = join(this.dir, file);
    try {
      await this.writer.write(path, head, source.open());
    } catch (cause) {
      await rm(path + PARTIAL, { force: true }).catch(() => undefined);
      await rm(path, { force: true }).catch(() => undefined);
      throw new SandgateError('ERR_SPOOL_WRITE', `cannot write queue item ${id}`, {
        cause,
        details: { dir: this.dir, code: (cause as { code?: string }).code },
      });
    }
    return { id, kind, createdAt, envelope, size: source.size, file, dataOffset: head.length };
  }

  /**
   * Indexes a prepared item (the moment it counts as accepted); `remove` deletes another item's
   * row in the same transaction (a DSN replaces the message it reports on). On failure the prepared
   * file is removed and ERR_SPOOL_WRITE thrown.
   */
  async insert(item: PreparedItem, options: { remove?: string } = {}): Promise<void> {
    this.insertNow(item, options);
  }

  /** insert(), for start-up recovery. */
  insertNow(item: PreparedItem, options: { remove?: string } = {}): void {
    try {
      this.db.transaction(() => {
        this.db
          .prepare(
            `INSERT INTO relay_queue (id, kind, created_at, sender, size, file, data_offset, envelope, next_attempt_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          )
          .run(
            item.id,
            item.kind,
            item.createdAt,
            item.envelope.sender,
            item.size,
            item.file,
            item.dataOffset,
            JSON.stringify({ ...item.envelope, recipients: undefined }),
            item.createdAt,
          );
        const rcpt = this.db.prepare(
          `INSERT INTO relay_queue_rcpt (queue_id, idx, address, params, state) VALUES (?, ?, ?, ?, 'pending')`,
        );
        item.envelope.recipients.forEach((r, i) => rcpt.run(item.id, i, r.address, JSON.stringify(r.params)));
        if (options.remove !== undefined) this.deleteRow(options.remove);
      })();
    } catch (cause) {
      rmSync(join(this.dir, item.file), { force: true });
      throw new SandgateError('ERR_SPOOL_WRITE', `cannot index queue item ${item.id}`, {
        cause,
        details: { dir: this.dir },
      });
    }
    this.counters.messages++;
    this.counters.bytes += item.size;
    if (options.remove !== undefined) this.unlink(options.remove);
  }

  async get(id: string): Promise<QueueItem | undefined> {
    return this.getNow(id);
  }

  private getNow(id: string): QueueItem | undefined {
    const row = this.db.prepare<[string], ItemRow>('SELECT * FROM relay_queue WHERE id = ?').get(id);
    if (row === undefined) return undefined;
    const rcpts = this.db
      .prepare<[string], RcptRow>(
        'SELECT idx, address, params, state, reply FROM relay_queue_rcpt WHERE queue_id = ? ORDER BY idx',
      )
      .all(id);
    return fromRows(row, rcpts);
  }

  /** Items in order of their next attempt (the operator's list). */
  async list(limit = 1000): Promise<QueueItem[]> {
    const rows = this.db
      .prepare<[number], ItemRow>('SELECT * FROM relay_queue ORDER BY next_attempt_at, id LIMIT ?')
      .all(limit);
    return rows.map((r) => this.getNow(r.id)).filter((x): x is QueueItem => x !== undefined);
  }

  /**
   * Ids due at `now`, soonest first, skipping `busy`. `unscannedOrBefore` (the next hop is down):
   * only items still to be scanned, or accepted before that time (to expire them).
   */
  async due(
    now: number,
    limit: number,
    busy: ReadonlySet<string>,
    unscannedOrBefore?: number,
  ): Promise<string[]> {
    const rows =
      unscannedOrBefore === undefined
        ? this.db
            .prepare<[number, number], { id: string }>(
              'SELECT id FROM relay_queue WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?',
            )
            .all(now, limit + busy.size)
        : this.db
            .prepare<[number, number, number], { id: string }>(
              `SELECT id FROM relay_queue WHERE next_attempt_at <= ? AND (scan IS NULL OR created_at <= ?)
               ORDER BY next_attempt_at LIMIT ?`,
            )
            .all(now, unscannedOrBefore, limit + busy.size);
    return rows
      .map((r) => r.id)
      .filter((id) => !busy.has(id))
      .slice(0, limit);
  }

  /** The earliest next attempt among items not in `busy` (for the worker's timer). */
  async nextDue(busy: ReadonlySet<string>): Promise<number | undefined> {
    const rows = this.db
      .prepare<[number], { id: string; t: number }>(
        'SELECT id, next_attempt_at AS t FROM relay_queue ORDER BY next_attempt_at LIMIT ?',
      )
      .all(busy.size + 1);
    return rows.find((r) => !busy.has(r.id))?.t;
  }

  /** A message that opens the queued bytes (without the envelope line). */
  message(item: QueueItem): MessageSource {
    return new FileMessage(
      item.id,
      {
        sender: item.envelope.sender,
        recipients: item.recipients.map((r) => r.address),
        ...(item.envelope.clientAddress !== undefined ? { clientAddress: item.envelope.clientAddress } : {}),
        ...(item.envelope.heloName !== undefined ? { heloName: item.envelope.heloName } : {}),
        frontEnd: 'relay',
      },
      join(this.dir, item.file),
      item.dataOffset,
      item.size,
    );
  }

  async setScan(id: string, scan: QueueScan): Promise<void> {
    this.db.prepare('UPDATE relay_queue SET scan = ? WHERE id = ?').run(JSON.stringify(scan), id);
  }

  /** Records per-recipient results of one attempt (one transaction). */
  async record(
    id: string,
    results: ReadonlyArray<{ idx: number; state: RecipientState; reply: string }>,
    now: number,
  ): Promise<void> {
    if (results.length === 0) return;
    const st = this.db.prepare(
      'UPDATE relay_queue_rcpt SET state = ?, reply = ?, updated_at = ? WHERE queue_id = ? AND idx = ?',
    );
    this.db.transaction(() => {
      for (const r of results) st.run(r.state, r.reply, now, id, r.idx);
    })();
  }

  /** Schedules the next attempt and counts this one. */
  async defer(id: string, nextAttemptAt: number, error: string): Promise<void> {
    this.db
      .prepare(
        'UPDATE relay_queue SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?',
      )
      .run(nextAttemptAt, error.slice(0, 500), id);
  }

  /** Operator's retry: due now, with the retry delay back at its start. */
  async retryNow(id: string, now: number): Promise<boolean> {
    return (
      this.db.prepare('UPDATE relay_queue SET next_attempt_at = ?, attempts = 0 WHERE id = ?').run(now, id)
        .changes > 0
    );
  }

  /** Removes an item: row first (then it no longer counts), then the file. */
  async remove(id: string): Promise<boolean> {
    return this.removeNow(id);
  }

  /** remove(), for start-up recovery. */
  removeNow(id: string): boolean {
    let removed = false;
    this.db.transaction(() => {
      removed = this.deleteRow(id);
    })();
    this.unlink(id);
    return removed;
  }

  async stats(): Promise<QueueStats> {
    return this.statsNow();
  }

  private statsNow(): QueueStats {
    const r = this.db
      .prepare<[], { n: number; b: number | null; o: number | null }>(
        'SELECT COUNT(*) AS n, SUM(size) AS b, MIN(created_at) AS o FROM relay_queue',
      )
      .get();
    return { messages: r?.n ?? 0, bytes: r?.b ?? 0, ...(r?.o != null ? { oldest: r.o } : {}) };
  }

  /** Cheap counters for back-pressure (kept in step by this process; refreshed by refreshCounters()). */
  get load(): { readonly messages: number; readonly bytes: number } {
    return this.counters;
  }

  async refreshCounters(): Promise<QueueStats> {
    return this.countersFromStats();
  }

  /** refreshCounters(), for the constructor and start-up recovery. */
  countersFromStats(): QueueStats {
    const s = this.statsNow();
    this.counters = { messages: s.messages, bytes: s.bytes };
    return s;
  }

  /**
   * Start-up repair (before accepting): removes temporary files; indexes message files without a
   * row; drops rows whose file is gone (see recoverRelayQueue).
   */
  async recover(): Promise<{ removedFiles: number; indexed: string[]; removedRows: string[] }> {
    return recoverRelayQueue(this, this.db);
  }

  /** Reads the envelope line of a queue file (diagnostics). */
  readHead(file: string): unknown {
    return readQueueHead(this.dir, file);
  }

  private deleteRow(id: string): boolean {
    const row = this.db
      .prepare<[string], { size: number }>('SELECT size FROM relay_queue WHERE id = ?')
      .get(id);
    if (row === undefined) return false;
    this.db.prepare('DELETE FROM relay_queue WHERE id = ?').run(id);
    this.counters.messages = Math.max(0, this.counters.messages - 1);
    this.counters.bytes = Math.max(0, this.counters.bytes - row.size);
    return true;
  }

  private unlink(id: string): void {
    rmSync(join(this.dir, `${id}${SUFFIX}`), { force: true });
  }
}

function fromRows(row: ItemRow, rcpts: RcptRow[]): QueueItem {
  const env = JSON.parse(row.envelope) as Omit<QueueEnvelope, 'recipients'>;
  const recipients: QueueRecipient[] = rcpts.map((r) => ({
    idx: r.idx,
    address: r.address,
    params: JSON.parse(r.params) as QueueParams,
    state: r.state as RecipientState,
    ...(r.reply !== null ? { reply: r.reply } : {}),
  }));
  return {
    id: row.id,
    kind: row.kind as QueueKind,
    createdAt: row.created_at,
    envelope: { ...env, recipients: recipients.map((r) => ({ address: r.address, params: r.params })) },
    size: row.size,
    file: row.file,
    dataOffset: row.data_offset,
    ...(row.scan !== null ? { scan: JSON.parse(row.scan) as QueueScan } : {}),
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    ...(row.last_error !== null ? { lastError: row.last_error } : {}),
    recipients,
  };
}
