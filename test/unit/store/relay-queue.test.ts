import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { relaySchema } from '../../../src/config/relay.js';
import { isSandgateError } from '../../../src/core/errors.js';
import { newMsgId } from '../../../src/core/ids.js';
import { BufferMessage } from '../../../src/mime/spool.js';
import { openStateDb, type StateDb } from '../../../src/store/db.js';
import { RelayQueueStore, type QueueEnvelope } from '../../../src/store/relay-queue.js';
import { tempDir } from '../../support/tmp.js';

const dbs: StateDb[] = [];
afterEach(() => {
  for (const db of dbs.splice(0)) db.close();
});

function open(dir: string, writer?: ConstructorParameters<typeof RelayQueueStore>[2]): RelayQueueStore {
  const db = openStateDb(dir);
  dbs.push(db);
  return new RelayQueueStore(db, join(dir, 'queue'), writer);
}

const ENV: QueueEnvelope = {
  sender: 'a@example.test',
  mailParams: { BODY: '8BITMIME' },
  recipients: [
    { address: 'b@example.test', params: {} },
    { address: 'c@example.test', params: { NOTIFY: 'NEVER' } },
  ],
  clientAddress: '127.0.0.1',
  xforward: { NAME: 'client.test' },
};

const BODY = 'Subject: hi\r\n\r\nbody\r\n';

function msg(): BufferMessage {
  return new BufferMessage(
    newMsgId(),
    { sender: ENV.sender, recipients: ENV.recipients.map((r) => r.address), frontEnd: 'relay' },
    Buffer.from(BODY),
  );
}

async function text(s: NodeJS.ReadableStream): Promise<string> {
  let out = '';
  for await (const c of s) out += (c as Buffer).toString();
  return out;
}

describe('RelayQueueStore', () => {
  it('keeps the envelope and the exact bytes; per-recipient state; remove deletes row and file', async () => {
    const store = open(tempDir());
    const m = msg();
    store.insert(await store.prepare(m, ENV, { now: 1000 }));
    const item = store.get(m.msgId);
    expect(item?.envelope).toEqual(ENV);
    expect(item?.recipients.map((r) => [r.address, r.state])).toEqual([
      ['b@example.test', 'pending'],
      ['c@example.test', 'pending'],
    ]);
    expect(await text(store.message(item!).open())).toBe(BODY);
    expect(store.load).toEqual({ messages: 1, bytes: BODY.length });
    store.record(m.msgId, [{ idx: 0, state: 'delivered', reply: '250 2.0.0 ok' }], 2000);
    store.defer(m.msgId, 5000, '450 busy');
    const after = store.get(m.msgId);
    expect(after?.recipients.map((r) => r.state)).toEqual(['delivered', 'pending']);
    expect([after?.attempts, after?.nextAttemptAt, after?.lastError]).toEqual([1, 5000, '450 busy']);
    expect(store.due(4999, 10, new Set())).toEqual([]);
    expect(store.due(5000, 10, new Set())).toEqual([m.msgId]);
    expect(store.remove(m.msgId)).toBe(true);
    expect(store.get(m.msgId)).toBeUndefined();
    expect(readdirSync(store.dir)).toEqual([]);
    expect(store.load).toEqual({ messages: 0, bytes: 0 });
  });

  it('a write failure at the store boundary (injected writer) is ERR_SPOOL_WRITE and leaves nothing', async () => {
    const store = open(tempDir(), {
      writer: {
        write(path) {
          writeFileSync(`${path}.partial`, 'half');
          return Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
        },
      },
    });
    const err = await store.prepare(msg(), ENV).catch((e: unknown) => e);
    expect(isSandgateError(err, 'ERR_SPOOL_WRITE')).toBe(true);
    expect(readdirSync(store.dir)).toEqual([]);
    expect(store.stats().messages).toBe(0);
  });

  it('recovery: indexes a complete file whose row was lost, removes partial files and rows without a file', async () => {
    const dir = tempDir();
    const store = open(dir);
    const kept = msg();
    const orphan = msg();
    const gone = msg();
    store.insert(await store.prepare(kept, ENV));
    await store.prepare(orphan, ENV); // crash before the row
    store.insert(await store.prepare(gone, ENV));
    rmSync(join(store.dir, `${gone.msgId}.msg`));
    writeFileSync(join(store.dir, 'sg-x.msg.partial'), 'half');

    const again = open(dir);
    const r = again.recover();
    expect(r).toEqual({ removedFiles: 1, indexed: [orphan.msgId], removedRows: [gone.msgId] });
    const item = again.get(orphan.msgId);
    expect(item?.envelope).toEqual(ENV);
    expect(await text(again.message(item!).open())).toBe(BODY);
    expect(readdirSync(again.dir).sort()).toEqual([`${kept.msgId}.msg`, `${orphan.msgId}.msg`].sort());
    expect(readFileSync(join(again.dir, `${kept.msgId}.msg`), 'utf8').endsWith(BODY)).toBe(true);
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
