import { describe, expect, it } from 'vitest';
import type { Evaluation } from '../../../src/core/evaluation.js';
import type { Decision } from '../../../src/core/policy.js';
import {
  DEFAULT_REPLY_SETTINGS,
  replyForEvaluation,
  tempfailReply,
  type ReplySettings,
} from '../../../src/helper/replies.js';
import { formatReply } from '../../../src/helper/protocol.js';

function evaluation(decision: Partial<Decision>, extra: Partial<Evaluation> = {}): Evaluation {
  return {
    msgId: 'sg-abc123-0011223344',
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
    ...extra,
  };
}

const VERDICT = { name: 'X-Sandgate-Verdict', value: 'clean; reason=clean; id=sg-abc123-0011223344' };
const MARK = { name: 'X-Sandgate-Mark', value: 'v1.clean.abc' };
const S = DEFAULT_REPLY_SETTINGS;
const ERROR_WORD: ReplySettings = { ...S, rejectWord: 'ERROR' };

describe('replyForEvaluation', () => {
  it('deliver: ADDHEADER with the core headers, or OK when headers are off', () => {
    const ev = evaluation({}, { headers: [VERDICT, MARK] });
    expect(formatReply('1', replyForEvaluation(ev, S))).toBe(
      '1 ADDHEADER "X-Sandgate-Verdict: clean; reason=clean; id=sg-abc123-0011223344\\eX-Sandgate-Mark: v1.clean.abc" OK\n',
    );
    expect(replyForEvaluation(ev, { ...S, addHeaders: false })).toEqual({ kind: 'OK' });
    expect(replyForEvaluation(evaluation({}), S)).toEqual({ kind: 'OK' });
  });

  it('fail-open is only ever ADDHEADER ... OK, even with headers off or missing', () => {
    const failOpen = { verdict: 'unscanned' as const, reason: 'failure:timeout', failOpen: true };
    const withHeader = evaluation(failOpen, {
      headers: [{ name: 'X-Sandgate-Verdict', value: 'unscanned; reason=failure:timeout' }],
    });
    expect(replyForEvaluation(withHeader, { ...S, addHeaders: false })).toEqual({
      kind: 'ADDHEADER',
      fields: ['X-Sandgate-Verdict: unscanned; reason=failure:timeout'],
    });
    const bare = replyForEvaluation(evaluation(failOpen), { ...S, addHeaders: false });
    expect(bare.kind).toBe('ADDHEADER');
    expect(bare.kind === 'ADDHEADER' && bare.fields[0]).toMatch(
      /^X-Sandgate-Verdict: unscanned; reason=failure:timeout/,
    );
    const bypass = replyForEvaluation(
      evaluation({ verdict: 'unscanned', reason: 'bypass:sender', bypass: 'sender' }),
      S,
    );
    expect(bypass.kind).toBe('ADDHEADER');
  });

  it('already judged mail that carries our verdict header gets a bare OK (no second header)', () => {
    const ev = evaluation(
      { reason: 'marked' },
      {
        alreadyJudged: true,
        headers: [VERDICT, MARK],
        stripHeaders: ['X-Sandgate-Verdict', 'X-Sandgate-Mark'],
      },
    );
    expect(replyForEvaluation(ev, S)).toEqual({ kind: 'OK' });
  });

  it('reject: DISCARD by default, ERROR "text" when configured', () => {
    const ev = evaluation(
      {
        action: 'reject',
        keepCopy: true,
        verdict: 'malicious',
        reason: 'malicious',
        threats: ['EICAR-Test-File'],
      },
      { quarantineId: 'q1' },
    );
    expect(replyForEvaluation(ev, S)).toEqual({ kind: 'DISCARD' });
    expect(formatReply('2', replyForEvaluation(ev, ERROR_WORD))).toBe(
      '2 ERROR "Message refused by sandgate: malicious (EICAR-Test-File), id sg-abc123-0011223344"\n',
    );
    const custom = replyForEvaluation(ev, {
      ...ERROR_WORD,
      texts: { ...S.texts, reject: 'no: {threats} {reason} {unknown}' },
    });
    expect(custom).toEqual({ kind: 'ERROR', text: 'no: EICAR-Test-File malicious {unknown}' });
  });

  it('quarantine and discard: DISCARD after the copy', () => {
    expect(
      replyForEvaluation(
        evaluation({ action: 'quarantine', keepCopy: true, verdict: 'suspicious' }, { quarantineId: 'q' }),
        S,
      ),
    ).toEqual({
      kind: 'DISCARD',
    });
    expect(
      replyForEvaluation(evaluation({ action: 'discard', keepCopy: false, verdict: 'malicious' }), S),
    ).toEqual({ kind: 'DISCARD' });
  });

  it('never drops mail whose promised copy is missing', () => {
    for (const action of ['reject', 'discard', 'quarantine'] as const) {
      const r = replyForEvaluation(evaluation({ action, keepCopy: true, verdict: 'malicious' }), S);
      expect(r.kind, action).toBe('REJECTED');
      expect(r.kind === 'REJECTED' && r.text).toContain('copy-missing');
    }
  });

  it('tempfail: REJECTED with the configured text', () => {
    const r = replyForEvaluation(
      evaluation({ action: 'tempfail', verdict: 'unscanned', reason: 'failure:timeout' }),
      S,
    );
    expect(formatReply('3', r)).toBe(
      '3 REJECTED "sandgate: not scanned yet (failure:timeout), will retry"\n',
    );
    expect(
      tempfailReply({ ...S, texts: { ...S.texts, tempfail: 'later {msgId}' } }, 'deadline', 'sg-x'),
    ).toEqual({
      kind: 'REJECTED',
      text: 'later sg-x',
    });
  });
});
