import { describe, expect, it } from 'vitest';
import { detectionNames, mapResult } from '../../../../src/sandbox/pt-sandbox/mapping.js';

describe('mapResult', () => {
  it.each([
    [{ scan_state: 'FULL', verdict: 'CLEAN' }, { kind: 'clean' }],
    [
      { scan_state: 'PARTIAL', verdict: 'CLEAN' },
      { kind: 'clean', partial: true },
    ],
    [
      { scan_state: 'FULL', verdict: 'UNWANTED' },
      { kind: 'suspicious', threats: ['PT-Sandbox.UNWANTED'] },
    ],
    [
      { scan_state: 'FULL', verdict: 'DANGEROUS' },
      { kind: 'malicious', threats: ['PT-Sandbox.DANGEROUS'] },
    ],
    [
      { scan_state: 'UNSCANNED', verdict: 'DANGEROUS' },
      { kind: 'malicious', partial: true },
    ],
    [
      { scan_state: 'PARTIAL', verdict: 'CLEAN', errors: [{ type: 'encrypted' }] },
      { kind: 'failed', reason: 'encrypted' },
    ],
    [
      { scan_state: 'UNSCANNED', errors: [{ type: 'max_depth_exceeded' }] },
      { kind: 'failed', reason: 'too-large' },
    ],
    [
      { scan_state: 'UNSCANNED', errors: [{ type: 'sandbox_run_sample' }] },
      { kind: 'failed', reason: 'unavailable' },
    ],
    [
      { scan_state: 'UNSCANNED', errors: [{ type: 'corrupted' }] },
      { kind: 'failed', reason: 'internal' },
    ],
    [
      { scan_state: 'UNSCANNED', verdict: 'CLEAN' },
      { kind: 'failed', reason: 'internal' },
    ],
    [
      { scan_state: 'FULL', verdict: 'SUSPICIOUS' },
      { kind: 'failed', reason: 'protocol' },
    ],
    [{ scan_state: 'FULL' }, { kind: 'failed', reason: 'internal' }],
    [{}, { kind: 'failed' }],
  ])('%j -> %j', (result, expected) => {
    const f = mapResult(result, []);
    expect(f).toMatchObject(expected);
    if (!('partial' in expected) && f.kind !== 'failed' && f.kind !== 'skipped')
      expect(f.partial).toBeUndefined();
  });

  it('a failure is never clean or malicious', () => {
    for (const verdict of [undefined, 'UNKNOWN', '', 'clean?']) {
      expect(mapResult({ scan_state: 'FULL', ...(verdict !== undefined ? { verdict } : {}) }, []).kind).toBe(
        'failed',
      );
    }
  });

  it('uses the given threat names and keeps details', () => {
    expect(
      mapResult({ scan_state: 'FULL', verdict: 'DANGEROUS' }, ['Trojan.X'], { scanId: 's1' }),
    ).toMatchObject({
      threats: ['Trojan.X'],
      details: { scanId: 's1', verdict: 'DANGEROUS', scanState: 'FULL' },
    });
  });
});

describe('detectionNames', () => {
  it('collects detect names recursively, unique, printable', () => {
    const tree = [
      {
        engine_results: [{ detections: [{ detect: 'A' }, { detect: 'A' }] }],
        artifacts: [
          { engine_results: [{ detections: [{ detect: 'B c\u0001' }, { threat: 'T' }] }], artifacts: [] },
        ],
      },
    ];
    expect(detectionNames(tree)).toEqual(['A', 'B_c_', 'T']);
    expect(detectionNames(undefined)).toEqual([]);
    expect(detectionNames([{ engine_results: 'junk', artifacts: [null, 3] }])).toEqual([]);
  });
});
