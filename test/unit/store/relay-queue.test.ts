import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { relaySchema } from '../../../src/config/relay.js';
import { isSandgateError } from '../../../src/core/errors.js';
import type { StatePorts } from '../../../src/core/ports.js';
import type { QueueFileWriter } from '../../../src/store/relay-queue.js';
import { openSqliteState } from '../../../src/store/sqlite-state.js';
import { BODY, ENV, msg, relayQueueContract, text } from '../../contract/relay-queue.js';
import { tempDir } from '../../support/tmp.js';
import { sqliteBackend } from './sqlite-backend.js';

relayQueueContract(sqliteBackend);

const states: StatePorts[] = [];
afterEach(async () => {
  for (const s of states.splice(0)) await s.close();
});

function open(dir: string, writer?: QueueFileWriter) {
  const state = openSqliteState(dir, writer !== undefined ? { queueWriter: writer } : {});
  states.push(state);
  return { store: state.relayQueue, queueDir: join(dir, 'queue') };
}

describe('the relay queue in SQLite and files', () => {
  it('keeps each message in a file beside its row; remove deletes both', async () => {
    const { store, queueDir } = open(tempDir());
    const m = msg();
    await store.insert(await store.prepare(m, ENV, { now: 1000 }));
    expect(readdirSync(queueDir)).toEqual([`${m.msgId}.msg`]);
    expect(readFileSync(join(queueDir, `${m.msgId}.msg`), 'utf8').endsWith(BODY)).toBe(true);
    expect(await store.remove(m.msgId)).toBe(true);
    expect(await store.get(m.msgId)).toBeUndefined();
    expect(readdirSync(queueDir)).toEqual([]);
    expect(store.load).toEqual({ messages: 0, bytes: 0 });
  });

  it('a write failure at the store boundary (injected writer) is ERR_SPOOL_WRITE and leaves nothing', async () => {
    const { store, queueDir } = open(tempDir(), {
      write(path) {
        writeFileSync(`${path}.partial`, 'half');
        return Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
      },
    });
    const err = await store.prepare(msg(), ENV).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_SPOOL_WRITE')).toBe(true);
    expect(readdirSync(queueDir)).toEqual([]);
    expect((await store.stats()).messages).toBe(0);
  });

  it('recovery: indexes a complete file whose row was lost, removes partial files and rows without a file', async () => {
    const dir = tempDir();
    const { store, queueDir } = open(dir);
    const kept = msg();
    const orphan = msg();
    const gone = msg();
    await store.insert(await store.prepare(kept, ENV));
    await store.prepare(orphan, ENV); // crash before the row
    await store.insert(await store.prepare(gone, ENV));
    rmSync(join(queueDir, `${gone.msgId}.msg`));
    writeFileSync(join(queueDir, 'sg-x.msg.partial'), 'half');

    const again = open(dir).store;
    const r = await again.recover();
    expect(r).toEqual({ removedFiles: 1, indexed: [orphan.msgId], removedRows: [gone.msgId] });
    const item = await again.get(orphan.msgId);
    expect(item?.envelope).toEqual(ENV);
    expect(await text(again.message(item!).open())).toBe(BODY);
    expect(readdirSync(queueDir).sort()).toEqual([`${kept.msgId}.msg`, `${orphan.msgId}.msg`].sort());
    expect(readFileSync(join(queueDir, `${kept.msgId}.msg`), 'utf8').endsWith(BODY)).toBe(true);
    expect(again.load.messages).toBe(2);
  });

  it('relay.mode defaults to inline; relay.queue has safe defaults', () => {
    const r = relaySchema.parse({});
    expect(r.mode).toBe('inline');
    expect(r.queue).toMatchObject({
      scanDeadline: 30 * 60_000,
      maxLifetime: 5 * 86_400_000,
      retryMin: 60_000,
      retryMax: 3_600_000,
      concurrency: 10,
      maxMessages: 10_000,
      maxBytes: 10 * 1024 ** 3,
    });
    expect(() => relaySchema.parse({ mode: 'queue', queue: { bogus: 1 } })).toThrow(/bogus/);
  });
});
