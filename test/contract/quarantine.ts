/** Contract of the quarantine (QuarantineStore): items, their bytes, the index, retention. */
import { describe, expect, it } from 'vitest';
import { isSandgateError } from '../../src/core/errors.js';
import type { Envelope } from '../../src/core/message.js';
import type { QuarantineStore } from '../../src/core/ports.js';
import type { Decision } from '../../src/core/policy.js';
import { SUSPICIOUS_DECISION as decision } from '../support/quarantine-items.js';
import { BufferMessage } from '../../src/mime/spool.js';
import type { StateBackend } from './backend.js';

const DAY = 86_400_000;

const ENVELOPE: Envelope = { sender: 's@x.test', recipients: ['r@x.test'], frontEnd: 'test' };

/** Random-ish bytes, so gzip keeps them about this size. */
function body(id: string, bytes = 2000): Buffer {
  return Buffer.from(
    Array.from({ length: bytes }, (_, i) =>
      String.fromCharCode(33 + ((i * 7919 + id.length * 31) % 90)),
    ).join(''),
  );
}

async function put(
  store: QuarantineStore,
  id: string,
  o: { bytes?: Buffer; envelope?: Envelope; decision?: Decision; subject?: string } = {},
): Promise<string> {
  return store.put({
    message: new BufferMessage(id, o.envelope ?? ENVELOPE, o.bytes ?? body(id)),
    contentKey: id.padEnd(64, '0'),
    decision: o.decision ?? decision,
    outcomes: [{ scanner: 'rules', kind: 'suspicious', threats: ['X'], cached: false, ms: 1 }],
    ...(o.subject !== undefined ? { subject: o.subject } : {}),
  });
}

async function text(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error('resolved'),
    (e: unknown) => e,
  );
}

/** A clock the test moves. */
function clock(start = Date.UTC(2025, 0, 1)) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

export function quarantineContract(backend: StateBackend): void {
  describe(`QuarantineStore (${backend.name})`, () => {
    it('keeps the item: its record, its exact bytes, and another process sees it', async () => {
      const c = clock();
      const opened = await backend.open({ now: c.now });
      const store = opened.state.quarantine;
      const bytes = Buffer.from('Subject: hello\r\n\r\nbody \u00e9\r\n', 'utf8');
      const envelope: Envelope = {
        sender: 'Alice@Example.test',
        recipients: ['bob@x.test', 'carol@y.test'],
        clientAddress: '192.0.2.1',
        heloName: 'mx.example.test',
        frontEnd: 'relay',
      };
      expect(await put(store, 'q1', { bytes, envelope, subject: 'hello' })).toBe('q1');
      const item = await store.get('q1');
      expect(item).toMatchObject({
        id: 'q1',
        msgId: 'q1',
        createdAt: c.now(),
        envelope,
        subject: 'hello',
        verdict: 'suspicious',
        action: 'quarantine',
        reason: 'suspicious',
        threats: ['X'],
        outcomes: [{ scanner: 'rules', kind: 'suspicious', threats: ['X'], cached: false, ms: 1 }],
        contentKey: 'q1'.padEnd(64, '0'),
        size: bytes.length,
      });
      expect(item.releasedAt).toBeUndefined();
      expect(item.storedSize).toBeGreaterThan(0);
      expect(await text(store.openOriginal(item))).toEqual(bytes);
      // Each open is a fresh stream.
      expect(await text(store.openOriginal(item))).toEqual(bytes);
      const other = await opened.another();
      expect(await other.quarantine.get('q1')).toEqual(item);
      expect(await text(other.quarantine.openOriginal(item))).toEqual(bytes);
      expect(await other.quarantine.count()).toBe(1);
    });

    it('an unknown id is ERR_QUARANTINE_NOT_FOUND for get and delete, false for markReleased', async () => {
      const { state } = await backend.open();
      expect(isSandgateError(await rejection(state.quarantine.get('nope')), 'ERR_QUARANTINE_NOT_FOUND')).toBe(
        true,
      );
      expect(
        isSandgateError(await rejection(state.quarantine.delete('nope')), 'ERR_QUARANTINE_NOT_FOUND'),
      ).toBe(true);
      expect(await state.quarantine.markReleased('nope', { by: 'x', to: 'y' })).toBe(false);
    });

    it('keeps the decoded subject (koi8-r, windows-1251) and finds items by it, ё as е, any case', async () => {
      const { state } = await backend.open();
      // "Счёт на оплату" in koi8-r, and "Акт сверки" in windows-1251, as RFC 2047 encoded words.
      const koi8 = '=?koi8-r?B?896j1CDOwSDP0MzB1NU=?=';
      const cp1251 = '=?windows-1251?B?wOryIPHi5fDq6A==?=';
      await put(state.quarantine, 's1', { subject: koi8 });
      await put(state.quarantine, 's2', { subject: cp1251 });
      expect((await state.quarantine.get('s1')).subjectText).toBe('Счёт на оплату');
      expect((await state.quarantine.get('s2')).subjectText).toBe('Акт сверки');
      expect((await state.quarantine.list({ subject: 'СЧЕТ' })).map((i) => i.id)).toEqual(['s1']);
      expect((await state.quarantine.list({ subject: 'сверк' })).map((i) => i.id)).toEqual(['s2']);
      expect(await state.quarantine.list({ subject: 'invoice' })).toEqual([]);
    });

    it('lists newest first, filtered by time, verdict, sender, recipient, release and limit', async () => {
      const c = clock();
      const { state } = await backend.open({ now: c.now });
      const store = state.quarantine;
      const t0 = c.now();
      await put(store, 'l1', { envelope: { ...ENVELOPE, sender: 'Boss@Corp.test' } });
      c.advance(1000);
      await put(store, 'l2', {
        envelope: { ...ENVELOPE, recipients: ['a@x.test', 'Mixed.Case@Y.test'] },
        decision: { ...decision, verdict: 'malicious', action: 'reject', reason: 'malicious' },
      });
      c.advance(1000);
      await put(store, 'l3', { envelope: { ...ENVELOPE, sender: '100%_sure@x.test' } });
      const ids = async (f: Parameters<QuarantineStore['list']>[0]) => (await store.list(f)).map((i) => i.id);
      expect(await ids(undefined)).toEqual(['l3', 'l2', 'l1']);
      expect(await ids({ since: t0 + 1000 })).toEqual(['l3', 'l2']);
      expect(await ids({ before: t0 + 1000 })).toEqual(['l1']);
      expect(await ids({ verdict: 'malicious' })).toEqual(['l2']);
      expect(await ids({ sender: 'boss@corp' })).toEqual(['l1']);
      expect(await ids({ recipient: 'mixed.case@y' })).toEqual(['l2']);
      // LIKE wildcards in a filter are plain characters.
      expect(await ids({ sender: '100%_' })).toEqual(['l3']);
      expect(await ids({ sender: '%' })).toEqual(['l3']);
      expect(await ids({ sender: 's_x' })).toEqual([]);
      expect(await ids({ limit: 2 })).toEqual(['l3', 'l2']);
      expect(
        await store.markReleased('l2', { by: 'cli:ops', to: 'smtp://mx:25 a@x.test', at: t0 + 5000 }),
      ).toBe(true);
      expect(await ids({ released: true })).toEqual(['l2']);
      expect(await ids({ released: false })).toEqual(['l3', 'l1']);
      expect(await store.get('l2')).toMatchObject({
        releasedAt: t0 + 5000,
        releasedBy: 'cli:ops',
        releasedTo: 'smtp://mx:25 a@x.test',
      });
    });

    it('delete removes the item from every list at once, and recovery does not bring it back', async () => {
      const opened = await backend.open();
      const store = opened.state.quarantine;
      await put(store, 'c1');
      await put(store, 'c2');
      const deleted = await store.delete('c1');
      expect(deleted.id).toBe('c1');
      const other = await opened.another();
      expect((await other.quarantine.list()).map((i) => i.id)).toEqual(['c2']);
      expect(await store.recover()).toEqual({ indexed: 0, removed: 0 });
      expect(await store.count()).toBe(1);
      await store.delete('c2');
      expect(await store.recover()).toEqual({ indexed: 0, removed: 0 });
      expect(await store.count()).toBe(0);
    });

    it('retention removes items past maxAge, oldest first', async () => {
      const c = clock();
      const { state } = await backend.open({ now: c.now });
      const store = state.quarantine;
      await put(store, 'a1');
      c.advance(DAY);
      await put(store, 'a2');
      c.advance(DAY);
      await put(store, 'a3');
      c.advance(DAY);
      expect(await store.enforceRetention({ maxAgeMs: 2.5 * DAY, maxTotalBytes: 1e12 })).toEqual(['a1']);
      expect((await store.list()).map((i) => i.id)).toEqual(['a3', 'a2']);
      c.advance(DAY);
      expect(await store.enforceRetention({ maxAgeMs: 2.5 * DAY, maxTotalBytes: 1e12 })).toEqual(['a2']);
    });

    it('retention removes the oldest first until the total size fits', async () => {
      const c = clock();
      const { state } = await backend.open({ now: c.now });
      const store = state.quarantine;
      for (const id of ['b1', 'b2', 'b3', 'b4']) {
        await put(store, id);
        c.advance(60_000);
      }
      const sizes = (await store.list()).map((i) => i.storedSize);
      const total = await store.totalStoredBytes();
      expect(total).toBe(sizes.reduce((a, b) => a + b, 0));
      // Room for about two items: the two oldest go, in order.
      const limit = total - (await store.get('b1')).storedSize - (await store.get('b2')).storedSize;
      const removed = await store.enforceRetention({ maxAgeMs: 365 * DAY, maxTotalBytes: limit });
      expect(removed).toEqual(['b1', 'b2']);
      expect(await store.totalStoredBytes()).toBeLessThanOrEqual(limit);
      expect((await store.list()).map((i) => i.id)).toEqual(['b4', 'b3']);
      expect(await store.enforceRetention({ maxAgeMs: 365 * DAY, maxTotalBytes: limit })).toEqual([]);
    });
  });
}
