import { describe, expect, it } from 'vitest';
import type { Finding } from '../../../../src/core/outcome.js';
import type { ExchangeResult } from '../../../../src/sandbox/icap/connection.js';
import { parseEncapsulated, parseHttpHead, parseIcapHead } from '../../../../src/sandbox/icap/protocol.js';
import {
  IcapThreats,
  infectionFrom,
  mapExchange,
  type Mapped,
} from '../../../../src/sandbox/icap/verdict.js';

const headers = (lines: string) => parseIcapHead(`ICAP/1.0 200 OK\r\n${lines}`).headers;

describe('infection headers', () => {
  it.each([
    [
      'X-Infection-Found (c-icap)',
      'X-Infection-Found: Type=0; Resolution=2; Threat=Test.EICAR.NDB.UNOFFICIAL;',
      'malicious',
      ['Test.EICAR.NDB.UNOFFICIAL'],
    ],
    [
      'X-Infection-Found, several threats (Kaspersky)',
      'X-Infection-Found: Type=0; Resolution=0; Threat=EICAR-Test-File,Trojan.Win32.Agent;',
      'malicious',
      ['EICAR-Test-File', 'Trojan.Win32.Agent'],
    ],
    [
      'X-Infection-Found without Threat',
      'X-Infection-Found: Type=0; Resolution=2;',
      'malicious',
      [IcapThreats.infection],
    ],
    [
      'X-Infection-Found Type=2 (container, Symantec)',
      'X-Infection-Found: Type=2; Resolution=2; Threat=Encrypted container violation;',
      'suspicious',
      ['Encrypted_container_violation'],
    ],
    [
      'X-Infection-Found Type=1 (policy)',
      'x-infection-found: type=1; resolution=2; threat=Blocked file type;',
      'suspicious',
      ['Blocked_file_type'],
    ],
    ['X-Virus-ID (Sophos, McAfee)', 'X-Virus-ID: Troj/DocDl-OYC', 'malicious', ['Troj/DocDl-OYC']],
    [
      'X-Violations-Found, multi-line',
      'X-Violations-Found: 2\r\n\tinvoice.doc\r\n\tW97M.Downloader\r\n\t1001\r\n\t2\r\n\tb.exe\r\n\tTrojan.Gen\r\n\t1002\r\n\t2',
      'malicious',
      ['W97M.Downloader', 'Trojan.Gen'],
    ],
    ['X-Violations-Found, count only', 'X-Violations-Found: 1', 'malicious', [IcapThreats.infection]],
    ['X-Blocked: yes', 'X-Blocked: yes', 'malicious', [IcapThreats.blocked]],
    ['X-Blocked-Reason (OPSWAT)', 'X-Blocked-Reason: Infected', 'malicious', ['Infected']],
    [
      'X-Response-Info: Blocked (OPSWAT)',
      'X-Response-Info: Blocked\r\nX-Response-Desc: Encrypted Archive',
      'malicious',
      ['Encrypted_Archive'],
    ],
  ])('%s', (_name, lines, kind, threats) => {
    expect(infectionFrom(headers(lines))).toMatchObject({ kind, threats });
  });

  it('merges the forms c-icap sends together into one threat', () => {
    const inf = infectionFrom(
      headers(
        'X-Infection-Found: Type=0; Resolution=2; Threat=Test.EICAR.NDB.UNOFFICIAL;\r\n' +
          'X-Violations-Found: 1\r\n\t-\r\n\tTest.EICAR.NDB.UNOFFICIAL\r\n\t0\r\n\t0',
      ),
    );
    expect(inf).toEqual({
      kind: 'malicious',
      threats: ['Test.EICAR.NDB.UNOFFICIAL'],
      headers: ['x-infection-found', 'x-violations-found'],
    });
  });

  it('a configured header, by name in any case, with its value as the threat', () => {
    expect(
      infectionFrom(headers('X-FSecure-Infection-Name: "Trojan.X"'), ['x-fsecure-infection-name']),
    ).toMatchObject({
      kind: 'malicious',
      threats: ['"Trojan.X"'],
    });
    expect(infectionFrom(headers('X-FSecure-Infection-Name: "Trojan.X"'))).toBeUndefined();
  });

  it.each([
    'X-Violations-Found: 0',
    'X-Blocked: no',
    'X-Blocked: false',
    'X-Virus-ID: none',
    'X-Response-Info: Allowed',
    'X-Response-Desc: Infected',
    'X-Infection: whatever',
  ])('%s is no infection', (lines) => {
    expect(infectionFrom(headers(lines))).toBeUndefined();
  });

  it('threat names become printable tokens of bounded length', () => {
    const inf = infectionFrom(headers(`X-Virus-ID: ${'A'.repeat(300)}\u00e9 x`));
    expect(inf?.threats[0]).toMatch(/^A{120}$/);
  });
});

function result(over: Partial<ExchangeResult> & { raw?: string }): ExchangeResult {
  const { raw, ...rest } = over;
  const head = raw === undefined ? undefined : parseIcapHead(raw);
  const enc = head?.headers.get('Encapsulated');
  return {
    ended: 'complete',
    ...(head !== undefined ? { head } : {}),
    ...(enc !== undefined ? { encapsulated: parseEncapsulated(enc) } : {}),
    httpHeads: [],
    body: { bytes: 0, complete: false },
    sentAll: true,
    received: 100,
    reusable: true,
    ...rest,
  };
}

const resHdr = (status: number) => [
  {
    section: 'res-hdr' as const,
    http: parseHttpHead(Buffer.from(`HTTP/1.1 ${status} X\r\n\r\n`), 'res-hdr'),
  },
];

function finding(m: Mapped): Finding {
  if (m.kind !== 'finding') throw new Error(`expected a finding, got ${JSON.stringify(m)}`);
  return m.finding;
}

const map = (r: ExchangeResult, method: 'RESPMOD' | 'REQMOD' = 'RESPMOD', size = 1000) =>
  mapExchange({ result: r, method, size, infectionHeaders: [], details: { server: 's' } });

describe('mapExchange: what each answer becomes', () => {
  it('204 after the whole content: clean', () => {
    expect(finding(map(result({ raw: 'ICAP/1.0 204 Unmodified' })))).toEqual({
      kind: 'clean',
      details: { server: 's', status: 204 },
    });
  });

  it('204 in answer to a preview: clean; 204 before the whole content outside a preview: failed(protocol)', () => {
    const preview = { bytes: 1024, ieof: false, answered: true };
    expect(finding(map(result({ raw: 'ICAP/1.0 204 No Content', sentAll: false, preview }))).kind).toBe(
      'clean',
    );
    expect(finding(map(result({ raw: 'ICAP/1.0 204 No Content', sentAll: false })))).toMatchObject({
      kind: 'failed',
      reason: 'protocol',
    });
  });

  it('200 echo, complete and byte-identical: clean; a REQMOD echo the same', () => {
    const echo = result({
      raw: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=30',
      httpHeads: resHdr(200),
      body: { bytes: 1000, complete: true, comparison: 'identical' },
    });
    expect(finding(map(echo)).kind).toBe('clean');
    const reqEcho = result({
      raw: 'ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, req-body=30',
      body: { bytes: 1000, complete: true, comparison: 'identical' },
    });
    expect(finding(map(reqEcho, 'REQMOD')).kind).toBe('clean');
  });

  it('200 with part of the body (c-icap SendPercentData): failed(protocol), never clean', () => {
    const f = finding(
      map(
        result({
          raw: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=30',
          httpHeads: resHdr(200),
          body: { bytes: 157_289, complete: true, comparison: 'prefix' },
        }),
        'RESPMOD',
        3_145_797,
      ),
    );
    expect(f).toMatchObject({ kind: 'failed', reason: 'protocol', details: { bytesReturned: 157_289 } });
  });

  it('200 with another body: malicious (replaced content); with a block page: malicious (blocked)', () => {
    expect(
      finding(
        map(
          result({
            raw: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=30',
            httpHeads: resHdr(200),
            body: { bytes: 10, complete: true, comparison: 'differs' },
          }),
        ),
      ),
    ).toMatchObject({ kind: 'malicious', threats: [IcapThreats.replaced] });
    expect(
      finding(
        map(
          result({
            raw: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=30',
            httpHeads: resHdr(403),
            body: { bytes: 10, complete: true, comparison: 'differs' },
          }),
        ),
      ),
    ).toMatchObject({ kind: 'malicious', threats: [IcapThreats.blocked], details: { httpStatus: 403 } });
  });

  it('REQMOD answered with an HTTP response: blocked', () => {
    const r = result({
      raw: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=30',
      httpHeads: resHdr(200),
      body: { bytes: 10, complete: true, comparison: 'differs' },
    });
    expect(finding(map(r, 'REQMOD'))).toMatchObject({ kind: 'malicious', threats: [IcapThreats.blocked] });
  });

  it('infection headers win over everything else, even an identical echo or a cut body', () => {
    const raw = 'ICAP/1.0 200 OK\r\nX-Virus-ID: Eicar\r\nEncapsulated: res-hdr=0, res-body=30';
    expect(
      finding(map(result({ raw, body: { bytes: 1000, complete: true, comparison: 'identical' } }))),
    ).toMatchObject({
      kind: 'malicious',
      threats: ['Eicar'],
    });
    expect(finding(map(result({ raw, ended: 'closed', detail: 'ECONNRESET' })))).toMatchObject({
      kind: 'malicious',
    });
    expect(
      finding(
        map(result({ raw: 'ICAP/1.0 403 Forbidden\r\nX-Infection-Found: Type=0; Resolution=2; Threat=T;' })),
      ),
    ).toMatchObject({
      kind: 'malicious',
      threats: ['T'],
    });
  });

  it.each([
    [
      '200 with a null-body for content',
      'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, null-body=30',
      resHdr(200),
      'protocol',
    ],
    ['200 with opt-body', 'ICAP/1.0 200 OK\r\nEncapsulated: opt-body=0', [], 'protocol'],
    ['400', 'ICAP/1.0 400 Bad request', [], 'protocol'],
    ['404', 'ICAP/1.0 404 Service not found', [], 'protocol'],
    ['405', 'ICAP/1.0 405 Method not allowed', [], 'protocol'],
    ['408', 'ICAP/1.0 408 Request timeout', [], 'timeout'],
    ['501', 'ICAP/1.0 501 Not implemented', [], 'protocol'],
    ['505', 'ICAP/1.0 505 Version not supported', [], 'protocol'],
    [
      '206 (never allowed)',
      'ICAP/1.0 206 Partial Content\r\nEncapsulated: res-hdr=0, res-body=30',
      resHdr(200),
      'protocol',
    ],
    ['an ICAP 403 without a header', 'ICAP/1.0 403 Forbidden', [], 'protocol'],
  ])('%s: failed(%s)', (_name, raw, httpHeads, reason) => {
    expect(finding(map(result({ raw, httpHeads, body: { bytes: 0, complete: true } })))).toMatchObject({
      kind: 'failed',
      reason,
    });
  });

  it.each([
    ['500 (c-icap with clamd down)', 'ICAP/1.0 500 Server error'],
    ['503 overloaded', 'ICAP/1.0 503 Service overloaded'],
    ['539 (Symantec without a licence)', 'ICAP/1.0 539 Aborted - No AV scanning license'],
  ])('%s: the next server', (_name, raw) => {
    expect(map(result({ raw }))).toMatchObject({ kind: 'next-server', reason: 'unavailable' });
  });

  it('closed before any answer: the next server; in the middle of one: failed(protocol)', () => {
    expect(map(result({ ended: 'closed', detail: 'ECONNRESET', received: 0 }))).toMatchObject({
      kind: 'next-server',
    });
    expect(
      finding(
        map(result({ raw: 'ICAP/1.0 200 OK\r\nEncapsulated: res-body=0', ended: 'closed', received: 50 })),
      ),
    ).toMatchObject({ kind: 'failed', reason: 'protocol' });
  });

  it.each([
    ['timeout', 'timeout'],
    ['aborted', 'timeout'],
    ['protocol', 'protocol'],
    ['source-failed', 'internal'],
  ] as const)('%s: failed(%s)', (ended, reason) => {
    expect(finding(map(result({ ended, received: 0 })))).toMatchObject({ kind: 'failed', reason });
  });

  it('nothing but 204 and an identical echo is ever clean', () => {
    const raws = [
      'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=30',
      'ICAP/1.0 200 OK\r\nEncapsulated: res-body=0',
      'ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, req-body=30',
      'ICAP/1.0 201 Created\r\nEncapsulated: res-body=0',
      'ICAP/1.0 204 No Content',
      'ICAP/1.0 500 Error',
      undefined,
    ];
    const bodies: ExchangeResult['body'][] = [
      { bytes: 1000, complete: true, comparison: 'identical' },
      { bytes: 999, complete: true, comparison: 'prefix' },
      { bytes: 10, complete: true, comparison: 'differs' },
      { bytes: 10, complete: false },
    ];
    const endings = ['complete', 'closed', 'timeout', 'aborted', 'protocol', 'source-failed'] as const;
    let cleans = 0;
    for (const raw of raws) {
      for (const body of bodies) {
        for (const ended of endings) {
          for (const sentAll of [true, false]) {
            for (const method of ['RESPMOD', 'REQMOD'] as const) {
              for (const heads of [[], resHdr(200), resHdr(403)]) {
                const r = result({
                  ...(raw !== undefined ? { raw } : {}),
                  body,
                  ended,
                  sentAll,
                  httpHeads: heads,
                });
                const m = map(r, method);
                if (m.kind !== 'finding' || m.finding.kind !== 'clean') continue;
                cleans++;
                const status = r.head?.status;
                const cleanEcho =
                  status === 200 &&
                  body.comparison === 'identical' &&
                  ended === 'complete' &&
                  !heads.some((h) => h.http.status !== 200) &&
                  !(method === 'REQMOD' && heads.length > 0);
                const clean204 = status === 204 && ended === 'complete' && sentAll;
                expect({
                  raw,
                  body,
                  ended,
                  sentAll,
                  method,
                  heads: heads.length,
                  ok: cleanEcho || clean204,
                }).toMatchObject({
                  ok: true,
                });
              }
            }
          }
        }
      }
    }
    // 204 after everything (2 methods x 3 res-hdr forms x 4 bodies), and the identical echoes
    // (x2 for sentAll): RESPMOD res-hdr+res-body with no or a 200 res-hdr, RESPMOD res-body alone
    // likewise, REQMOD req-hdr+req-body without a res-hdr.
    expect(cleans).toBe(24 + 4 + 4 + 2);
  });
});
