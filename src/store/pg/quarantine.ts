import { decodeHeaderText, searchFold } from '../../mime/header-text.js';
import { pipeline as pipelineCb, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type pg from 'pg';
import { SandgateError } from '../../core/errors.js';
import type { QuarantineEntry, QuarantineStore } from '../../core/ports.js';
import type { QuarantineFilter, QuarantineItem, QuarantineRecord } from '../../core/state-records.js';
import { fromRow, likeEscape, quarantineRecord, type QuarantineRow } from '../quarantine-row.js';
import { inTransaction } from './stores.js';

/** Compressed bytes per quarantine_chunk row. */
export const CHUNK_BYTES = 512 * 1024;

const INSERT_ROW = `INSERT INTO quarantine (id, msg_id, created_at, front_end, sender, recipients, client, helo, subject,
    verdict, action, reason, threats, outcomes, content_key, size, stored_size, file, subject_text, subject_fold)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`;

function rowValues(r: QuarantineRecord): unknown[] {
  // As the SQLite index keeps it: decoded for display, folded for `--subject` searches.
  const subjectText = r.subject !== undefined ? decodeHeaderText(r.subject) : null;
  return [
    r.id,
    r.msgId,
    r.createdAt,
    r.envelope.frontEnd,
    r.envelope.sender,
    JSON.stringify(r.envelope.recipients),
    r.envelope.clientAddress ?? null,
    r.envelope.heloName ?? null,
    r.subject ?? null,
    r.verdict,
    r.action,
    r.reason,
    JSON.stringify(r.threats),
    JSON.stringify(r.outcomes),
    r.contentKey,
    r.size,
    r.storedSize,
    r.file,
    subjectText,
    subjectText !== null ? searchFold(subjectText) : null,
  ];
}

/**
 * The quarantine in PostgreSQL: the index row and the gzipped message in CHUNK_BYTES rows of
 * quarantine_chunk, written in one transaction (an item is all there or not at all, on every node),
 * read back one chunk per query as the stream is consumed (node-postgres does not stream bytea).
 */
export class PgQuarantineStore implements QuarantineStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly now: () => number = Date.now,
  ) {}

  async put(entry: QuarantineEntry): Promise<string> {
    const id = entry.message.msgId;
    const createdAt = this.now();
    try {
      await inTransaction(this.pool, async (c) => {
        const record = quarantineRecord(entry, { id, createdAt, storedSize: 0, file: `pg:${id}` });
        await c.query(INSERT_ROW, rowValues(record));
        const storedSize = await this.writeChunks(
          c,
          id,
          Readable.from(entry.message.open()).pipe(createGzip()),
        );
        await c.query('UPDATE quarantine SET stored_size = $2 WHERE id = $1', [id, storedSize]);
      });
      return id;
    } catch (cause) {
      throw new SandgateError('ERR_QUARANTINE_WRITE', `cannot write quarantine item ${id}`, {
        cause,
        details: { backend: 'postgresql' },
      });
    }
  }

  /** Copies an item as it is (`sandgate state import`): the record and its gzipped bytes. */
  async importItem(record: QuarantineItem, gzipped: AsyncIterable<Buffer>): Promise<boolean> {
    return inTransaction(this.pool, async (c) => {
      const exists = await c.query('SELECT 1 FROM quarantine WHERE id = $1', [record.id]);
      if ((exists.rowCount ?? 0) > 0) return false;
      await c.query(INSERT_ROW, rowValues({ ...record, file: `pg:${record.id}` }));
      const storedSize = await this.writeChunks(c, record.id, Readable.from(gzipped));
      await c.query(
        'UPDATE quarantine SET stored_size = $2, released_at = $3, released_by = $4, released_to = $5 WHERE id = $1',
        [
          record.id,
          storedSize,
          record.releasedAt ?? null,
          record.releasedBy ?? null,
          record.releasedTo ?? null,
        ],
      );
      return true;
    });
  }

  private async writeChunks(c: pg.PoolClient, id: string, source: Readable): Promise<number> {
    let seq = 0;
    let total = 0;
    let parts: Buffer[] = [];
    let size = 0;
    const writeOne = async (data: Buffer): Promise<void> => {
      await c.query('INSERT INTO quarantine_chunk (id, seq, data) VALUES ($1, $2, $3)', [id, seq++, data]);
      total += data.length;
    };
    await pipeline(
      source,
      new Writable({
        write(chunk: Buffer, _enc, done) {
          parts.push(chunk);
          size += chunk.length;
          if (size < CHUNK_BYTES) return done();
          const all = Buffer.concat(parts);
          parts = [];
          size = 0;
          void (async () => {
            for (let o = 0; o + CHUNK_BYTES <= all.length; o += CHUNK_BYTES)
              await writeOne(all.subarray(o, o + CHUNK_BYTES));
            const rest = all.length % CHUNK_BYTES;
            if (rest > 0) {
              parts = [all.subarray(all.length - rest)];
              size = rest;
            }
          })().then(() => done(), done);
        },
        final(done) {
          const all = Buffer.concat(parts);
          parts = [];
          (all.length > 0 ? writeOne(all) : Promise.resolve()).then(() => done(), done);
        },
      }),
    );
    return total;
  }

  async recover(): Promise<{ indexed: number; removed: number }> {
    // Items are written in one transaction: a crash leaves nothing half done to repair.
    return { indexed: 0, removed: 0 };
  }

  async count(): Promise<number> {
    return (await this.pool.query<{ n: number }>('SELECT count(*) AS n FROM quarantine')).rows[0]?.n ?? 0;
  }

  async list(filter: QuarantineFilter = {}): Promise<QuarantineItem[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    const p = (v: unknown): string => {
      values.push(v);
      return `$${values.length}`;
    };
    if (filter.since !== undefined) where.push(`created_at >= ${p(filter.since)}`);
    if (filter.before !== undefined) where.push(`created_at < ${p(filter.before)}`);
    if (filter.verdict !== undefined) where.push(`verdict = ${p(filter.verdict)}`);
    if (filter.sender !== undefined)
      where.push(`lower(sender) LIKE ${p(`%${likeEscape(filter.sender.toLowerCase())}%`)}`);
    if (filter.recipient !== undefined)
      where.push(`lower(recipients) LIKE ${p(`%${likeEscape(filter.recipient.toLowerCase())}%`)}`);
    if (filter.subject !== undefined)
      where.push(`subject_fold LIKE ${p(`%${likeEscape(searchFold(filter.subject))}%`)}`);
    if (filter.released !== undefined)
      where.push(filter.released ? 'released_at IS NOT NULL' : 'released_at IS NULL');
    const limit = Math.max(1, Math.min(filter.limit ?? 100, 10_000));
    const r = await this.pool.query<QuarantineRow>(
      `SELECT * FROM quarantine ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT ${p(limit)}`,
      values,
    );
    return r.rows.map(fromRow);
  }

  async get(id: string): Promise<QuarantineItem> {
    const r = await this.pool.query<QuarantineRow>('SELECT * FROM quarantine WHERE id = $1', [id]);
    const row = r.rows[0];
    if (row === undefined) {
      throw new SandgateError('ERR_QUARANTINE_NOT_FOUND', `no quarantine item "${id}"`, { details: { id } });
    }
    return fromRow(row);
  }

  /** The original bytes: one chunk fetched per read, gunzipped on the way. */
  openOriginal(item: Pick<QuarantineItem, 'id' | 'file'>): Readable {
    const pool = this.pool;
    async function* chunks(): AsyncGenerator<Buffer> {
      for (let seq = 0; ; seq++) {
        const r = await pool.query<{ data: Buffer }>(
          'SELECT data FROM quarantine_chunk WHERE id = $1 AND seq = $2',
          [item.id, seq],
        );
        const row = r.rows[0];
        if (row === undefined) {
          if (seq === 0) {
            throw new SandgateError(
              'ERR_QUARANTINE_NOT_FOUND',
              `no stored message for quarantine item "${item.id}"`,
              {
                details: { id: item.id },
              },
            );
          }
          return;
        }
        yield row.data;
      }
    }
    const gunzip = createGunzip();
    pipelineCb(Readable.from(chunks()), gunzip, () => undefined);
    return gunzip;
  }

  async delete(id: string): Promise<QuarantineItem> {
    const r = await this.pool.query<QuarantineRow>('DELETE FROM quarantine WHERE id = $1 RETURNING *', [id]);
    const row = r.rows[0];
    if (row === undefined) {
      throw new SandgateError('ERR_QUARANTINE_NOT_FOUND', `no quarantine item "${id}"`, { details: { id } });
    }
    return fromRow(row);
  }

  async markReleased(id: string, release: { by: string; to: string; at?: number }): Promise<boolean> {
    const r = await this.pool.query(
      'UPDATE quarantine SET released_at = $2, released_by = $3, released_to = $4 WHERE id = $1',
      [id, release.at ?? this.now(), release.by, release.to],
    );
    return (r.rowCount ?? 0) > 0;
  }

  async enforceRetention(limits: { maxAgeMs: number; maxTotalBytes: number }): Promise<string[]> {
    const cutoff = this.now() - limits.maxAgeMs;
    return inTransaction(this.pool, async (c) => {
      const old = await c.query<{ id: string }>(
        `WITH gone AS (DELETE FROM quarantine WHERE created_at < $1 RETURNING id, created_at)
         SELECT id FROM gone ORDER BY created_at, id COLLATE "C"`,
        [cutoff],
      );
      const removed = old.rows.map((r) => r.id);
      const over = await c.query<{ id: string }>(
        `WITH ranked AS (
           SELECT id, created_at, sum(stored_size) OVER (ORDER BY created_at DESC, id COLLATE "C" DESC) AS kept
           FROM quarantine),
         gone AS (DELETE FROM quarantine q USING ranked r WHERE q.id = r.id AND r.kept > $1 RETURNING q.id, q.created_at)
         SELECT id FROM gone ORDER BY created_at, id COLLATE "C"`,
        [limits.maxTotalBytes],
      );
      return [...removed, ...over.rows.map((r) => r.id)];
    });
  }

  async totalStoredBytes(): Promise<number> {
    return (
      (await this.pool.query<{ n: number }>('SELECT COALESCE(sum(stored_size), 0) AS n FROM quarantine'))
        .rows[0]?.n ?? 0
    );
  }
}
