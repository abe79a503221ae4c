/** Contract of the relay queue (RelayQueueStore, queue mode). */
import { describe, expect, it } from 'vitest';
import { newMsgId } from '../../src/core/ids.js';
import type { QueueEnvelope } from '../../src/core/state-records.js';
import { BufferMessage } from '../../src/mime/spool.js';
import type { StateBackend } from './backend.js';

export const ENV: QueueEnvelope = {
  sender: 'a@example.test',
  mailParams: { BODY: '8BITMIME' },
  recipients: [
    { address: 'b@example.test', params: {} },
    { address: 'c@example.test', params: { NOTIFY: 'NEVER' } },
  ],
  clientAddress: '127.0.0.1',
  xforward: { NAME: 'client.test' },
};

export const BODY = 'Subject: hi\r\n\r\nbody\r\n';

export function msg(body = BODY): BufferMessage {
  return new BufferMessage(
    newMsgId(),
    { sender: ENV.sender, recipients: ENV.recipients.map((r) => r.address), frontEnd: 'relay' },
    Buffer.from(body),
  );
}

export async function text(s: NodeJS.ReadableStream): Promise<string> {
  let out = '';
  for await (const c of s) out += (c as Buffer).toString();
  return out;
}

export function relayQueueContract(backend: StateBackend): void {
  describe(`RelayQueueStore (${backend.name})`, () => {
    it('keeps the envelope and the exact bytes; per-recipient state; remove deletes the item', async () => {
      const { state } = await backend.open();
      const store = state.relayQueue;
      const m = msg();
      await store.insert(await store.prepare(m, ENV, { now: 1000 }));
      const item = await store.get(m.msgId);
      expect(item?.envelope).toEqual(ENV);
      expect(item).toMatchObject({
        id: m.msgId,
        kind: 'message',
        createdAt: 1000,
        attempts: 0,
        nextAttemptAt: 1000,
      });
      expect(item?.scan).toBeUndefined();
      expect(item?.recipients.map((r) => [r.address, r.state])).toEqual([
        ['b@example.test', 'pending'],
        ['c@example.test', 'pending'],
      ]);
      expect(await text(store.message(item!).open())).toBe(BODY);
      expect(store.message(item!).envelope).toMatchObject({
        sender: ENV.sender,
        recipients: ['b@example.test', 'c@example.test'],
      });
      expect(store.load).toEqual({ messages: 1, bytes: BODY.length });
      await store.record(m.msgId, [{ idx: 0, state: 'delivered', reply: '250 2.0.0 ok' }], 2000);
      await store.defer(m.msgId, 5000, '450 busy');
      const after = await store.get(m.msgId);
      expect(after?.recipients.map((r) => r.state)).toEqual(['delivered', 'pending']);
      expect(after?.recipients[0]?.reply).toBe('250 2.0.0 ok');
      expect([after?.attempts, after?.nextAttemptAt, after?.lastError]).toEqual([1, 5000, '450 busy']);
      expect(await store.due(4999, 10, new Set())).toEqual([]);
      expect(await store.due(5000, 10, new Set())).toEqual([m.msgId]);
      expect(await store.remove(m.msgId)).toBe(true);
      expect(await store.remove(m.msgId)).toBe(false);
      expect(await store.get(m.msgId)).toBeUndefined();
      expect(store.load).toEqual({ messages: 0, bytes: 0 });
    });

    it('a prepared item is not queued until it is inserted', async () => {
      const { state } = await backend.open();
      const store = state.relayQueue;
      const m = msg();
      const prepared = await store.prepare(m, ENV, { now: 1000 });
      expect(await store.get(m.msgId)).toBeUndefined();
      expect(await store.due(2000, 10, new Set())).toEqual([]);
      expect(store.load.messages).toBe(0);
      await store.insert(prepared);
      expect(await store.due(2000, 10, new Set())).toEqual([m.msgId]);
    });

    it('a DSN replaces the item it reports on in one step', async () => {
      const opened = await backend.open();
      const store = opened.state.relayQueue;
      const original = msg();
      await store.insert(await store.prepare(original, ENV, { now: 1000 }));
      const dsn = msg('Subject: Undelivered\r\n\r\nreport\r\n');
      const dsnEnv: QueueEnvelope = {
        sender: '',
        mailParams: {},
        recipients: [{ address: ENV.sender, params: {} }],
        xforward: {},
      };
      await store.insert(await store.prepare(dsn, dsnEnv, { kind: 'dsn', now: 2000 }), {
        remove: original.msgId,
      });
      const other = await opened.another();
      expect(await other.relayQueue.get(original.msgId)).toBeUndefined();
      expect(await other.relayQueue.get(dsn.msgId)).toMatchObject({ kind: 'dsn', envelope: dsnEnv });
      expect(store.load.messages).toBe(1);
      expect(await store.stats()).toMatchObject({ messages: 1, oldest: 2000 });
    });

    it('due: soonest first, within the limit, skipping busy ones; nextDue skips busy ones too', async () => {
      const { state } = await backend.open();
      const store = state.relayQueue;
      const ids: string[] = [];
      for (const at of [3000, 1000, 2000]) {
        const m = msg();
        await store.insert(await store.prepare(m, ENV, { now: at }));
        ids.push(m.msgId);
      }
      const [late, early, middle] = ids as [string, string, string];
      expect(await store.due(5000, 10, new Set())).toEqual([early, middle, late]);
      expect(await store.due(5000, 2, new Set())).toEqual([early, middle]);
      expect(await store.due(5000, 2, new Set([early]))).toEqual([middle, late]);
      expect(await store.due(1500, 10, new Set())).toEqual([early]);
      expect(await store.nextDue(new Set())).toBe(1000);
      expect(await store.nextDue(new Set([early]))).toBe(2000);
      expect(await store.nextDue(new Set(ids))).toBeUndefined();
      expect((await store.list()).map((i) => i.id)).toEqual([early, middle, late]);
      expect(await store.stats()).toEqual({ messages: 3, bytes: 3 * BODY.length, oldest: 1000 });
    });

    it('the next hop down: only unscanned items, or those old enough to expire, are due', async () => {
      const { state } = await backend.open();
      const store = state.relayQueue;
      const scannedOld = msg();
      const scannedNew = msg();
      const unscanned = msg();
      for (const [m, at] of [
        [scannedOld, 1000],
        [scannedNew, 3000],
        [unscanned, 3000],
      ] as const) {
        await store.insert(await store.prepare(m, ENV, { now: at }));
      }
      const scan = {
        headers: [{ name: 'X-Sandgate', value: 'clean' }],
        stripHeaders: [],
        verdict: 'clean',
        reason: 'clean',
      };
      await store.setScan(scannedOld.msgId, scan);
      await store.setScan(scannedNew.msgId, scan);
      expect((await store.get(scannedNew.msgId))?.scan).toEqual(scan);
      expect((await store.due(5000, 10, new Set(), 2000)).sort()).toEqual(
        [scannedOld.msgId, unscanned.msgId].sort(),
      );
    });

    it('retryNow makes an item due now with its attempts back at zero', async () => {
      const { state } = await backend.open();
      const store = state.relayQueue;
      const m = msg();
      await store.insert(await store.prepare(m, ENV, { now: 1000 }));
      await store.defer(m.msgId, 100_000, 'x'.repeat(600));
      expect((await store.get(m.msgId))?.lastError).toHaveLength(500);
      expect(await store.due(2000, 10, new Set())).toEqual([]);
      expect(await store.retryNow(m.msgId, 2000)).toBe(true);
      expect(await store.retryNow('sg-none', 2000)).toBe(false);
      expect(await store.due(2000, 10, new Set())).toEqual([m.msgId]);
      expect((await store.get(m.msgId))?.attempts).toBe(0);
    });

    it('the counters follow inserts and removes; refreshCounters reads them back; recovery of a clean queue does nothing', async () => {
      const opened = await backend.open();
      const store = opened.state.relayQueue;
      const m = msg();
      await store.insert(await store.prepare(m, ENV, { now: 1000 }));
      expect(store.load).toEqual({ messages: 1, bytes: BODY.length });
      // Another process sees the item; its counters start from the stats.
      const other = await opened.another();
      expect(other.relayQueue.load).toEqual({ messages: 1, bytes: BODY.length });
      expect(await other.relayQueue.remove(m.msgId)).toBe(true);
      expect(store.load.messages).toBe(1);
      expect(await store.refreshCounters()).toEqual({ messages: 0, bytes: 0 });
      expect(store.load).toEqual({ messages: 0, bytes: 0 });
      expect(await store.recover()).toEqual({ removedFiles: 0, indexed: [], removedRows: [] });
    });
  });
}
