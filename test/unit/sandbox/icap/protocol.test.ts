import { describe, expect, it } from 'vitest';
import { icapSchema, icapServiceUrl } from '../../../../src/config/icap.js';
import {
  buildModRequest,
  buildOptionsRequest,
  chunkHeader,
  CHUNK_END,
  IEOF_CHUNK,
  IcapProtocolError,
  parseEncapsulated,
  parseHttpHead,
  parseIcapHead,
  parseOptions,
  safeFileName,
  transferMode,
  ZERO_CHUNK,
} from '../../../../src/sandbox/icap/protocol.js';

const svc = (url: string) => icapServiceUrl.parse(url);

describe('ICAP service URLs (scanners.icap.servers)', () => {
  it.each([
    [
      'icap://127.0.0.1:1344/avscan',
      { tls: false, host: '127.0.0.1', port: 1344, path: '/avscan', uri: 'icap://127.0.0.1:1344/avscan' },
    ],
    [
      'icap://av.example.net/srv',
      { host: 'av.example.net', port: 1344, uri: 'icap://av.example.net:1344/srv' },
    ],
    [
      'icaps://av.example.net/respmod',
      {
        tls: true,
        port: 11344,
        uri: 'icap://av.example.net:11344/respmod',
        label: 'icaps://av.example.net:11344/respmod',
      },
    ],
    [
      'icap://[::1]:1345/virus_scan?force=on',
      { host: '::1', port: 1345, path: '/virus_scan?force=on', uri: 'icap://[::1]:1345/virus_scan?force=on' },
    ],
    ['ICAP://Host:1/av/respmod', { host: 'Host', port: 1, path: '/av/respmod' }],
  ])('%s', (url, expected) => {
    expect(svc(url)).toMatchObject(expected);
  });

  it.each([
    'icap://127.0.0.1:1344',
    'icap://127.0.0.1:1344/',
    'http://127.0.0.1/avscan',
    'icap://127.0.0.1:0/avscan',
    'icap://127.0.0.1:70000/avscan',
    'icap://user@host/avscan',
    'icap://host/av scan',
    '127.0.0.1:1344',
  ])('refuses %s', (url) => {
    expect(icapServiceUrl.safeParse(url).success).toBe(false);
  });

  it('names the bad entry of the list in the error path', () => {
    const r = icapSchema.safeParse({ servers: ['icap://a/avscan', 'nope'] });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['servers', 1]);
  });

  it('takes a comma-separated list from the environment and lower-cases header names', () => {
    const c = icapSchema.parse({ servers: 'icap://a/x, icap://b/y', infectionHeaders: 'X-Threat,X-Other' });
    expect(c.servers.map((s) => s.label)).toEqual(['icap://a:1344/x', 'icap://b:1344/y']);
    expect(c.infectionHeaders).toEqual(['x-threat', 'x-other']);
  });
});

describe('ICAP requests, byte for byte', () => {
  const avscan = svc('icap://127.0.0.1:1344/avscan');

  it('OPTIONS: absolute URI, Host without the default port, Encapsulated: null-body=0', () => {
    expect(buildOptionsRequest(avscan).toString('latin1')).toBe(
      'OPTIONS icap://127.0.0.1:1344/avscan ICAP/1.0\r\n' +
        'Host: 127.0.0.1\r\n' +
        'User-Agent: sandgate\r\n' +
        'Encapsulated: null-body=0\r\n\r\n',
    );
    expect(buildOptionsRequest(svc('icap://[::1]:1345/x')).toString('latin1')).toContain(
      'Host: [::1]:1345\r\n',
    );
  });

  it('RESPMOD: req-hdr, res-hdr, res-body offsets point exactly at each section', () => {
    const head = buildModRequest({
      method: 'RESPMOD',
      service: avscan,
      size: 68,
      name: 'eicar.com',
      contentType: 'application/octet-stream',
      preview: 68,
    }).toString('latin1');
    const reqHdr = 'GET /eicar.com HTTP/1.1\r\nHost: sandgate.invalid\r\n\r\n';
    const resHdr =
      'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 68\r\n' +
      'Content-Disposition: attachment; filename="eicar.com"\r\n\r\n';
    expect(head).toBe(
      'RESPMOD icap://127.0.0.1:1344/avscan ICAP/1.0\r\n' +
        'Host: 127.0.0.1\r\n' +
        'User-Agent: sandgate\r\n' +
        'Allow: 204\r\n' +
        'Preview: 68\r\n' +
        `Encapsulated: req-hdr=0, res-hdr=${reqHdr.length}, res-body=${reqHdr.length + resHdr.length}\r\n` +
        '\r\n' +
        reqHdr +
        resHdr,
    );
    // The offsets, read back from the request, land on "GET", "HTTP/1.1 200" and the body's start.
    const icapHeadEnd = head.indexOf('\r\n\r\n') + 4;
    const enc = parseEncapsulated(/Encapsulated: (.*)\r\n/.exec(head)?.[1] ?? '');
    const body = head.slice(icapHeadEnd);
    expect(body.slice(enc.headers[0]!.offset).startsWith('GET ')).toBe(true);
    expect(body.slice(enc.headers[1]!.offset).startsWith('HTTP/1.1 200 OK')).toBe(true);
    expect(enc.body).toEqual({ name: 'res-body', offset: body.length });
  });

  it('REQMOD: a POST of the file, req-hdr and req-body; no Allow or Preview when not asked', () => {
    const head = buildModRequest({
      method: 'REQMOD',
      service: svc('icap://av:1345/req'),
      size: 5,
      name: 'a b.txt',
      contentType: 'Text/Plain',
      allow204: false,
    }).toString('latin1');
    const reqHdr =
      'POST /a%20b.txt HTTP/1.1\r\nHost: sandgate.invalid\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n' +
      'Content-Disposition: attachment; filename="a b.txt"\r\n\r\n';
    expect(head).toBe(
      'REQMOD icap://av:1345/req ICAP/1.0\r\nHost: av:1345\r\nUser-Agent: sandgate\r\n' +
        `Encapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`,
    );
  });

  it('file names and types cannot break the headers', () => {
    expect(safeFileName('a"b\\c\r\nX-Infection-Found: x.exe')).toBe('a_b_c__X-Infection-Found: x.exe');
    expect(safeFileName('счёт.pdf')).toBe('____.pdf');
    expect(safeFileName('   ')).toBe('content.bin');
    const head = buildModRequest({
      method: 'RESPMOD',
      service: svc('icap://a/b'),
      size: 1,
      name: 'x\r\ny',
      contentType: 'text/html\r\nX-Evil: 1',
    }).toString('latin1');
    expect(head).not.toContain('X-Evil');
    expect(head).toContain('Content-Type: application/octet-stream\r\n');
    expect(head.split('\r\n\r\n')).toHaveLength(4);
  });

  it('chunks: hex size line, data, CRLF; zero chunk; ieof only on the zero chunk', () => {
    expect(chunkHeader(1).toString()).toBe('1\r\n');
    expect(chunkHeader(0xffff).toString()).toBe('ffff\r\n');
    expect(chunkHeader(1024 * 1024).toString()).toBe('100000\r\n');
    expect(CHUNK_END.toString()).toBe('\r\n');
    expect(ZERO_CHUNK.toString()).toBe('0\r\n\r\n');
    expect(IEOF_CHUNK.toString()).toBe('0; ieof\r\n\r\n');
    expect(() => chunkHeader(0)).toThrow(RangeError);
  });
});

describe('ICAP responses', () => {
  it('reads the status line and headers, case-insensitively, with folded continuation lines', () => {
    const head = parseIcapHead(
      'ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nisTag: "CI0001-x"\r\n' +
        'X-Violations-Found: 1\r\n\t-\r\n\tTest.EICAR.NDB.UNOFFICIAL\r\n\t0\r\n\t0\r\n' +
        'Encapsulated: res-hdr=0, res-body=161',
    );
    expect(head).toMatchObject({ version: 'ICAP/1.0', status: 200, reason: 'OK' });
    expect(head.headers.get('ISTAG')).toBe('"CI0001-x"');
    expect(head.headers.all('x-violations-found')[0]).toEqual({
      name: 'X-Violations-Found',
      value: '1',
      continuation: ['-', 'Test.EICAR.NDB.UNOFFICIAL', '0', '0'],
    });
    expect(head.headers.get('X-Violations-Found')).toBe('1 - Test.EICAR.NDB.UNOFFICIAL 0 0');
  });

  it.each([
    ['HTTP/1.1 200 OK'],
    ['ICAP/2.0 200 OK'],
    ['ICAP/1.0 20 OK'],
    ['ICAP/1.0 200 OK\r\nno colon here'],
    ['ICAP/1.0 200 OK\r\n\tcontinuation first'],
    ['ICAP/1.0 200 OK\r\nBad Name: x'],
  ])('refuses %j', (raw) => {
    expect(() => parseIcapHead(raw)).toThrow(IcapProtocolError);
  });

  it('accepts a status without a reason text, and a 204 whatever its reason says', () => {
    expect(parseIcapHead('ICAP/1.0 204')).toMatchObject({ status: 204, reason: '' });
    expect(parseIcapHead('ICAP/1.0 204 Unmodified')).toMatchObject({ status: 204, reason: 'Unmodified' });
  });

  it.each([
    ['null-body=0', { headers: [], body: { name: 'null-body', offset: 0 } }],
    [
      'res-hdr=0, res-body=161',
      { headers: [{ name: 'res-hdr', offset: 0 }], body: { name: 'res-body', offset: 161 } },
    ],
    [
      'REQ-HDR=0,req-body=50',
      { headers: [{ name: 'req-hdr', offset: 0 }], body: { name: 'req-body', offset: 50 } },
    ],
    ['opt-body=0', { headers: [], body: { name: 'opt-body', offset: 0 } }],
  ])('Encapsulated %s', (value, expected) => {
    expect(parseEncapsulated(value)).toEqual(expected);
  });

  it.each([
    'res-hdr=0',
    'res-body=0, res-hdr=10',
    'res-hdr=5, res-body=10',
    'res-hdr=0, res-hdr=0, res-body=10',
    'res-hdr=0, res-body=10, null-body=20',
    'foo=0',
    'res-hdr=x',
    '',
  ])('refuses Encapsulated %j', (value) => {
    expect(() => parseEncapsulated(value)).toThrow(IcapProtocolError);
  });

  it('reads encapsulated HTTP heads: a status line in res-hdr, a request line in req-hdr', () => {
    expect(
      parseHttpHead(Buffer.from('HTTP/1.0 403 Forbidden\r\nServer: C-ICAP\r\n\r\n'), 'res-hdr'),
    ).toMatchObject({
      status: 403,
    });
    expect(
      parseHttpHead(Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\n\r\n'), 'req-hdr').status,
    ).toBeUndefined();
    expect(() => parseHttpHead(Buffer.from('HTTP/1.0 403 Forbidden\r\n'), 'res-hdr')).toThrow(
      IcapProtocolError,
    );
    expect(() => parseHttpHead(Buffer.from('<html>\r\n\r\n'), 'res-hdr')).toThrow(IcapProtocolError);
  });
});

describe('OPTIONS answers', () => {
  it('c-icap 0.5.10 with virus_scan, as answered on this machine', () => {
    const o = parseOptions(
      parseIcapHead(
        'ICAP/1.0 200 OK\r\nMethods: RESPMOD, REQMOD\r\nService: C-ICAP/0.5.10 server - Antivirus service\r\n' +
          'ISTag: "CI0001-L5CkDhq+qWNs+PZ5DxxXsAAA"\r\nTransfer-Preview: *\r\nOptions-TTL: 3600\r\n' +
          'Date: Fri, 04 Dec 2026 16:02:44 GMT\r\nPreview: 1024\r\nAllow: 204\r\nEncapsulated: null-body=0',
      ),
    );
    expect(o).toEqual({
      methods: ['RESPMOD', 'REQMOD'],
      istag: 'CI0001-L5CkDhq+qWNs+PZ5DxxXsAAA',
      service: 'C-ICAP/0.5.10 server - Antivirus service',
      preview: 1024,
      ttlSeconds: 3600,
      allow204: true,
      transferPreview: ['*'],
      transferIgnore: [],
      transferComplete: [],
    });
  });

  it('Max-Connections, Service-ID, Transfer lists; no Preview and no TTL when absent', () => {
    const o = parseOptions(
      parseIcapHead(
        'ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: W3E4R7U9-L2E4-2\r\nService-ID: av\r\nMax-Connections: 1\r\n' +
          'Transfer-Complete: .EXE, zip\r\nTransfer-Ignore: jpg\r\nTransfer-Preview: *',
      ),
    );
    expect(o).toMatchObject({
      methods: ['REQMOD'],
      istag: 'W3E4R7U9-L2E4-2',
      serviceId: 'av',
      maxConnections: 1,
      allow204: false,
      transferComplete: ['exe', 'zip'],
      transferIgnore: ['jpg'],
    });
    expect(o.preview).toBeUndefined();
    expect(o.ttlSeconds).toBeUndefined();
  });

  it.each([
    ['ICAP/1.0 404 ICAP Service not found\r\nEncapsulated: null-body=0'],
    ['ICAP/1.0 200 OK\r\nISTag: "x"'],
    ['ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nPreview: lots'],
    ['ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nMax-Connections: 0'],
    ['ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nOptions-TTL: -5'],
  ])('refuses %j', (raw) => {
    expect(() => parseOptions(parseIcapHead(raw))).toThrow(IcapProtocolError);
  });

  it('Transfer-*: the listed extension wins, then the list with "*", else a preview', () => {
    const o = parseOptions(
      parseIcapHead(
        'ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nTransfer-Preview: *\r\nTransfer-Complete: exe\r\nTransfer-Ignore: jpg',
      ),
    );
    expect(transferMode(o, 'setup.EXE')).toBe('complete');
    expect(transferMode(o, 'photo.jpg')).toBe('ignore');
    expect(transferMode(o, 'm1.eml')).toBe('preview');
    expect(transferMode(o, 'noext')).toBe('preview');
    const all = parseOptions(parseIcapHead('ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nTransfer-Complete: *'));
    expect(transferMode(all, 'm1.eml')).toBe('complete');
    const none = parseOptions(parseIcapHead('ICAP/1.0 200 OK\r\nMethods: RESPMOD'));
    expect(transferMode(none, 'm1.eml')).toBe('preview');
  });
});
