import { describe, expect, it } from 'vitest';
import { isMsgId, newMsgId } from '../../../src/core/ids.js';

describe('newMsgId', () => {
  it('gives well-formed ids that do not repeat, also across refills of its random pool', () => {
    const now = Date.UTC(2026, 10, 27);
    const ids = Array.from({ length: 2000 }, () => newMsgId(now));
    for (const id of ids) expect(isMsgId(id)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids[0]?.startsWith(`sg-${now.toString(36)}-`)).toBe(true);
  });
});
