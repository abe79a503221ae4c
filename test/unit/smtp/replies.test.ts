import { describe, expect, it } from 'vitest';
import type { Evaluation } from '../../../src/core/evaluation.js';
import type { Action } from '../../../src/core/policy.js';
import { combineReplies, decisionReply, nextHopReply, passBack, toError } from '../../../src/smtp/replies.js';

const ev = (action: Action, threats: string[] = [], quarantineId?: string): Evaluation => ({
  msgId: 'sg-abc123-0123456789',
  decision: {
    action,
    keepCopy: false,
    verdict: 'malicious',
    reason: action === 'tempfail' ? 'failure:timeout' : 'malicious',
    threats,
    failOpen: false,
  },
  outcomes: [],
  contentKey: 'k',
  ...(quarantineId ? { quarantineId } : {}),
  headers: [],
  stripHeaders: [],
  alreadyJudged: false,
  ms: 1,
});

describe('replies', () => {
  const texts = { rejectText: 'Refused: {threats} [{msgId}]' };
  it('maps each action to a code, an enhanced status and our msgId', () => {
    expect(decisionReply(ev('deliver'), texts)).toBeUndefined();
    expect(decisionReply(ev('reject', ['EICAR', 'Other']), texts)).toEqual({
      code: 550,
      enhanced: '5.7.1',
      text: 'Refused: EICAR, Other [sg-abc123-0123456789]',
    });
    expect(decisionReply(ev('quarantine', [], 'q1'), texts)).toMatchObject({
      code: 250,
      text: 'Ok: quarantined as q1 (sg-abc123-0123456789)',
    });
    expect(decisionReply(ev('discard'), texts)).toMatchObject({ code: 250, enhanced: '2.0.0' });
    expect(decisionReply(ev('tempfail'), texts)).toMatchObject({ code: 451, enhanced: '4.7.0' });
  });
  it('passes the next hop reply back with its own code and status', () => {
    expect(nextHopReply({ code: 250, enhanced: '2.0.0', lines: ['Ok: queued as ABC'] }, 'sg-x')).toEqual({
      code: 250,
      enhanced: '2.0.0',
      text: 'Ok: sg-x (next hop: Ok: queued as ABC)',
    });
    expect(nextHopReply({ code: 452, lines: ['full'] }, 'sg-x')).toEqual({
      code: 452,
      enhanced: '4.0.0',
      text: 'full (sg-x)',
    });
    expect(nextHopReply({ code: 554, enhanced: '4.1.1', lines: ['mismatch'] }, 'sg-x').enhanced).toBe(
      '5.0.0',
    );
  });
  it('passes a refusal of MAIL or RCPT back with an enhanced code of the class it is sent with', () => {
    expect(passBack({ code: 550, enhanced: '5.1.1', lines: ['no such user'] })).toEqual({
      code: 550,
      enhanced: '5.1.1',
      text: 'no such user',
    });
    expect(passBack({ code: 452, enhanced: '5.2.2', lines: ['full'] }).enhanced).toBe('4.0.0');
    // Not a refusal at all: sent as 451, and with a 4.x.x code, never 451 2.0.0.
    expect(passBack({ code: 250, enhanced: '2.1.0', lines: ['odd'] })).toMatchObject({
      code: 451,
      enhanced: '4.0.0',
    });
  });
  it('combines LMTP replies so that no refused recipient hides behind a 250', () => {
    const ok = { code: 250, lines: ['ok'] };
    expect(combineReplies([ok, ok])).toBe(ok);
    expect(combineReplies([ok, { code: 550, lines: ['no'] }, { code: 452, lines: ['full'] }]).code).toBe(452);
    expect(combineReplies([ok, { code: 550, lines: ['no'] }]).code).toBe(550);
  });
  it('builds smtp-server errors carrying responseCode', () => {
    const e = toError({ code: 552, enhanced: '5.3.4', text: 'too big' });
    expect(e.responseCode).toBe(552);
    expect(e.message).toBe('5.3.4 too big');
  });
});
