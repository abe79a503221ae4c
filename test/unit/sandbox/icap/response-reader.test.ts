import { describe, expect, it } from 'vitest';
import { IcapProtocolError } from '../../../../src/sandbox/icap/protocol.js';
import { ResponseReader, type ReaderEvent } from '../../../../src/sandbox/icap/response-reader.js';

/** What c-icap 0.5.10 + virus_scan answered on this machine for EICAR (body shortened). */
const BLOCK_PAGE_HTTP =
  'HTTP/1.0 403 Forbidden\r\nServer: C-ICAP\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n';
const PAGE = '<html><h1>VIRUS FOUND</h1></html>\n';
const INFECTED =
  'ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: "CI0001-x"\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=Test.EICAR.NDB.UNOFFICIAL;\r\n' +
  'X-Violations-Found: 1\r\n\t-\r\n\tTest.EICAR.NDB.UNOFFICIAL\r\n\t0\r\n\t0\r\n' +
  `Encapsulated: res-hdr=0, res-body=${BLOCK_PAGE_HTTP.length}\r\n\r\n` +
  BLOCK_PAGE_HTTP +
  `${PAGE.length.toString(16)}\r\n${PAGE}\r\n0\r\n\r\n`;

function readAll(
  bytes: string | Buffer,
  pieceSize = Number.MAX_SAFE_INTEGER,
): { events: ReaderEvent[]; reader: ResponseReader } {
  const reader = new ResponseReader();
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1');
  const events: ReaderEvent[] = [];
  for (let i = 0; i < buf.length; i += pieceSize) events.push(...reader.feed(buf.subarray(i, i + pieceSize)));
  return { events, reader };
}

function summary(events: ReaderEvent[]): unknown[] {
  const out: unknown[] = [];
  let body = '';
  for (const e of events) {
    if (e.type === 'body') {
      body += e.data.toString('latin1');
      continue;
    }
    if (body !== '') {
      out.push({ body });
      body = '';
    }
    if (e.type === 'head') out.push({ head: e.head.status, body: e.encapsulated?.body.name });
    else if (e.type === 'http-head') out.push({ [e.section]: e.http.status ?? e.http.firstLine });
    else out.push(e.type);
  }
  if (body !== '') out.push({ body });
  return out;
}

describe('ResponseReader', () => {
  it("reads c-icap's infected answer: head, block page head, body, end; in one piece or byte by byte", () => {
    const expected = [{ head: 200, body: 'res-body' }, { 'res-hdr': 403 }, { body: PAGE }, 'end'];
    expect(summary(readAll(INFECTED).events)).toEqual(expected);
    const { events, reader } = readAll(INFECTED, 1);
    expect(summary(events)).toEqual(expected);
    expect(reader.done).toBe(true);
    expect(reader.trailing).toBe(0);
  });

  it('a 204 without Encapsulated ends at its empty line', () => {
    const { events, reader } = readAll(
      'ICAP/1.0 204 Unmodified\r\nServer: C-ICAP/0.5.10\r\nISTag: "x"\r\n\r\n',
    );
    expect(summary(events)).toEqual([{ head: 204, body: undefined }, 'end']);
    expect(reader.trailing).toBe(0);
  });

  it('100 Continue, then the final answer; bytes after the end are counted as trailing', () => {
    const { events, reader } = readAll(
      'ICAP/1.0 100 Continue\r\n\r\nICAP/1.0 204 No Content\r\nEncapsulated: null-body=0\r\n\r\nXYZ',
    );
    expect(summary(events)).toEqual(['continue', { head: 204, body: 'null-body' }, 'end']);
    expect(reader.trailing).toBe(3);
  });

  it('an echo: res-hdr then a body in several chunks with extensions and a trailer', () => {
    const http = 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n';
    const { events } = readAll(
      `ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=${http.length}\r\n\r\n${http}` +
        '5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n',
      3,
    );
    expect(summary(events)).toEqual([
      { head: 200, body: 'res-body' },
      { 'res-hdr': 200 },
      { body: 'hello world' },
      'end',
    ]);
  });

  it('an error answer without Encapsulated, and one with a null-body', () => {
    expect(summary(readAll('ICAP/1.0 500 Server error\r\nConnection: close\r\n\r\n').events)).toEqual([
      { head: 500, body: undefined },
      'end',
    ]);
    expect(summary(readAll('ICAP/1.0 404 Not found\r\nEncapsulated: null-body=0\r\n\r\n').events)).toEqual([
      { head: 404, body: 'null-body' },
      'end',
    ]);
  });

  it('a REQMOD echo: req-hdr and req-body', () => {
    const req = 'POST /x HTTP/1.1\r\nHost: a\r\n\r\n';
    expect(
      summary(
        readAll(
          `ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, req-body=${req.length}\r\n\r\n${req}1\r\nA\r\n0\r\n\r\n`,
        ).events,
      ),
    ).toEqual([{ head: 200, body: 'req-body' }, { 'req-hdr': 'POST /x HTTP/1.1' }, { body: 'A' }, 'end']);
  });

  it('accepts bare LF line ends in heads and chunk lines', () => {
    const { events } = readAll('ICAP/1.0 200 OK\nEncapsulated: res-body=0\n\n3\nabc\n0\n\n');
    expect(summary(events)).toEqual([{ head: 200, body: 'res-body' }, { body: 'abc' }, 'end']);
  });

  it('a body that stops before its zero chunk is not done', () => {
    const { reader } = readAll('ICAP/1.0 200 OK\r\nEncapsulated: res-body=0\r\n\r\n3\r\nabc\r\n');
    expect(reader.done).toBe(false);
  });

  it.each([
    ['200 without Encapsulated', 'ICAP/1.0 200 OK\r\nServer: x\r\n\r\n'],
    ['204 with a body', 'ICAP/1.0 204 No Content\r\nEncapsulated: res-body=0\r\n\r\n'],
    ['a bad chunk size', 'ICAP/1.0 200 OK\r\nEncapsulated: res-body=0\r\n\r\nzz\r\n'],
    [
      'chunk data longer than its size',
      'ICAP/1.0 200 OK\r\nEncapsulated: res-body=0\r\n\r\n2\r\nabc\r\n0\r\n\r\n',
    ],
    [
      'a res-hdr that is not HTTP',
      'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=9\r\n\r\nGARBAGE\r\n\r\n',
    ],
    ['an interim status other than 100', 'ICAP/1.0 101 Switching\r\n\r\n'],
    ['not ICAP at all', 'HTTP/1.1 200 OK\r\n\r\n'],
  ])('refuses %s', (_name, raw) => {
    expect(() => readAll(raw)).toThrow(IcapProtocolError);
  });

  it('bounds the head, the encapsulated headers and a chunk-size line', () => {
    expect(() => readAll(`ICAP/1.0 200 OK\r\nX: ${'a'.repeat(70_000)}`)).toThrow(/longer than/);
    expect(() => readAll('ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=100000\r\n\r\n')).toThrow(
      /longer than/,
    );
    expect(() => readAll(`ICAP/1.0 200 OK\r\nEncapsulated: res-body=0\r\n\r\n${'1'.repeat(5000)}`)).toThrow(
      /longer than/,
    );
  });
});
