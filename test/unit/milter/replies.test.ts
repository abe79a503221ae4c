import { describe, expect, it } from 'vitest';
import type { Evaluation } from '../../../src/core/evaluation.js';
import type { Decision } from '../../../src/core/policy.js';
import { decisionAnswer, replyCode } from '../../../src/milter/replies.js';
import { envelopeAddress, sizeParam } from '../../../src/milter/session.js';

function evaluation(decision: Partial<Decision>, more: Partial<Evaluation> = {}): Evaluation {
  return {
    msgId: 'sg-mx00000a-0123456789',
    decision: {
      action: 'deliver',
      keepCopy: false,
      verdict: 'clean',
      reason: 'clean',
      threats: [],
      failOpen: false,
      ...decision,
    },
    outcomes: [],
    contentKey: 'k',
    headers: [],
    stripHeaders: [],
    alreadyJudged: false,
    ms: 1,
    ...more,
  };
}

const options = {
  rejectText: 'Message refused: {threats} ({msgId})',
  countHeader: () => 0,
  leadingSpace: true,
};

describe('decisionAnswer', () => {
  it('deliver: deletes inbound copies highest index first, inserts ours at the top in order, accepts', () => {
    const ev = evaluation(
      {},
      {
        headers: [
          { name: 'X-Sandgate-Verdict', value: 'clean; id=1' },
          { name: 'X-Sandgate-Mark', value: 'v=1\r\nInjected: yes' },
        ],
        stripHeaders: ['X-Sandgate-Verdict'],
      },
    );
    const a = decisionAnswer(ev, { ...options, countHeader: (n) => (n === 'X-Sandgate-Verdict' ? 3 : 0) });
    expect(a.reply).toBe('accept');
    expect(a.code).toBe(250);
    expect(a.replies).toEqual([
      { kind: 'chgHeader', index: 3, name: 'X-Sandgate-Verdict', value: '' },
      { kind: 'chgHeader', index: 2, name: 'X-Sandgate-Verdict', value: '' },
      { kind: 'chgHeader', index: 1, name: 'X-Sandgate-Verdict', value: '' },
      { kind: 'insHeader', index: 0, name: 'X-Sandgate-Verdict', value: ' clean; id=1' },
      // A value can never add a field of its own.
      { kind: 'insHeader', index: 1, name: 'X-Sandgate-Mark', value: ' v=1 Injected: yes' },
      { kind: 'accept' },
    ]);
    // Without HDR_LEADSPC the MTA puts the space in itself.
    expect(decisionAnswer(ev, { ...options, leadingSpace: false }).replies[0]).toMatchObject({
      value: 'clean; id=1',
    });
  });

  it('reject: 550 5.7.1 with the threats and our id; 451 when the kept copy is missing', () => {
    const ev = evaluation(
      { action: 'reject', verdict: 'malicious', reason: 'malicious', threats: ['A', 'B'], keepCopy: true },
      { quarantineId: 'q1' },
    );
    expect(decisionAnswer(ev, options).replies).toEqual([
      { kind: 'replycode', text: '550 5.7.1 Message refused: A, B (sg-mx00000a-0123456789)' },
    ]);
    const noCopy = evaluation({ action: 'reject', keepCopy: true, threats: ['A'] });
    expect(decisionAnswer(noCopy, options)).toMatchObject({ code: 451, reply: 'replycode' });
  });

  it('quarantine and discard: DISCARD once the copy exists, never SMFIR_QUARANTINE', () => {
    const q = evaluation({ action: 'quarantine', keepCopy: true }, { quarantineId: 'q1' });
    expect(decisionAnswer(q, options).replies).toEqual([{ kind: 'discard' }]);
    expect(decisionAnswer(evaluation({ action: 'quarantine', keepCopy: true }), options).code).toBe(451);
    // An operator's discard without a copy (policy.keepCopy: false) is theirs to choose.
    expect(decisionAnswer(evaluation({ action: 'discard', keepCopy: false }), options).replies).toEqual([
      { kind: 'discard' },
    ]);
  });

  it('tempfail: 451 4.7.0 with the reason', () => {
    const a = decisionAnswer(evaluation({ action: 'tempfail', reason: 'failure:timeout' }), options);
    expect(a.replies).toEqual([
      {
        kind: 'replycode',
        text: '451 4.7.0 Message could not be scanned (failure:timeout), try again later (sg-mx00000a-0123456789)',
      },
    ]);
  });
});

describe('replyCode', () => {
  it('doubles % and flattens line breaks and NULs', () => {
    expect(replyCode({ code: 550, enhanced: '5.7.1', text: '50%\r\nof\0it' })).toEqual({
      kind: 'replycode',
      text: '550 5.7.1 50%% of it',
    });
  });
});

describe('envelope helpers', () => {
  it('reads addresses with or without brackets, and the null sender', () => {
    expect(envelopeAddress('<a@b>')).toBe('a@b');
    expect(envelopeAddress('a@b')).toBe('a@b');
    expect(envelopeAddress('<>')).toBe('');
    expect(envelopeAddress('')).toBe('');
    expect(envelopeAddress(undefined)).toBe('');
  });

  it('reads SIZE= in any case, and nothing else', () => {
    expect(sizeParam(['<a@b>', 'BODY=8BITMIME', 'size=158'])).toBe(158);
    expect(sizeParam(['<a@b>', 'SIZE=x'])).toBeUndefined();
    expect(sizeParam(['SIZE=5'])).toBeUndefined();
  });
});
