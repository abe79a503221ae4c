/**
 * The ICAP wire protocol (RFC 3507), pure: request heads with their Encapsulated header, chunk
 * framing, and parsing of response heads, Encapsulated values, encapsulated HTTP heads and OPTIONS
 * answers. No I/O here; src/sandbox/icap/response-reader.ts reads a response as it arrives.
 */
import type { IcapServiceUrl } from '../../config/icap.js';

const CRLF = '\r\n';

/** Longest ICAP response head (status line and headers) we accept. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** Longest encapsulated HTTP header section(s) we accept. */
export const MAX_ENCAPSULATED_HEADER_BYTES = 64 * 1024;
/** More header lines than this in one head is a protocol error. */
export const MAX_HEADER_LINES = 500;

export class IcapProtocolError extends Error {
  override readonly name = 'IcapProtocolError';
}

/** One header as received: its name as sent, the first line's value, and any folded continuation lines. */
export interface IcapHeader {
  readonly name: string;
  /** The value on the header's own line, trimmed. */
  readonly value: string;
  /** Continuation lines (leading whitespace folded), trimmed, in order. */
  readonly continuation: readonly string[];
}

/** Headers in order, looked up case-insensitively. */
export class IcapHeaders {
  constructor(readonly list: readonly IcapHeader[]) {}

  /** Every header with this name (any case). */
  all(name: string): IcapHeader[] {
    const lower = name.toLowerCase();
    return this.list.filter((h) => h.name.toLowerCase() === lower);
  }

  /** The first header with this name, its value and continuation lines joined by a space. */
  get(name: string): string | undefined {
    const h = this.all(name)[0];
    return h === undefined ? undefined : unfold(h);
  }

  has(name: string): boolean {
    return this.all(name).length > 0;
  }
}

/** The value and continuation lines of a header as one line. */
export function unfold(h: IcapHeader): string {
  return [h.value, ...h.continuation].filter((s) => s !== '').join(' ');
}

export interface IcapHead {
  /** "ICAP/1.0". */
  readonly version: string;
  readonly status: number;
  readonly reason: string;
  readonly headers: IcapHeaders;
}

/** One Encapsulated entity: req-hdr, res-hdr, req-body, res-body, null-body or opt-body, at its offset. */
export interface EncapsulatedEntity {
  readonly name: EntityName;
  readonly offset: number;
}

export type EntityName = 'req-hdr' | 'res-hdr' | 'req-body' | 'res-body' | 'null-body' | 'opt-body';
const ENTITY_NAMES: ReadonlySet<string> = new Set([
  'req-hdr',
  'res-hdr',
  'req-body',
  'res-body',
  'null-body',
  'opt-body',
]);

export interface Encapsulated {
  /** Header sections in order, each ending where the next entity starts. */
  readonly headers: readonly EncapsulatedEntity[];
  /** The last entity: a body (req-body, res-body, opt-body) or null-body. */
  readonly body: EncapsulatedEntity;
}

// ---------------------------------------------------------------------------------------------
// Requests

export type IcapMethod = 'RESPMOD' | 'REQMOD';

/** What one RESPMOD or REQMOD request carries (besides the body itself, sent in chunks). */
export interface ModRequest {
  readonly method: IcapMethod;
  readonly service: IcapServiceUrl;
  /** Size of the body in bytes (it goes into the encapsulated Content-Length). */
  readonly size: number;
  /** File name shown to the service (sanitised here). */
  readonly name: string;
  /** MIME type of the content. */
  readonly contentType: string;
  /** Bytes the preview will carry; undefined: no preview. */
  readonly preview?: number;
  /** Ask for 204 when nothing is changed (always, unless a test says otherwise). */
  readonly allow204?: boolean;
  readonly userAgent?: string;
}

/** The host an encapsulated HTTP message names: a reserved name, so nothing is ever fetched from it. */
export const ENCAPSULATED_HOST = 'sandgate.invalid';

/** The Host header of an ICAP request: host, with the port unless it is 1344. */
export function hostHeader(service: IcapServiceUrl): string {
  const host = service.host.includes(':') ? `[${service.host}]` : service.host;
  return service.port === 1344 ? host : `${host}:${service.port}`;
}

/** An OPTIONS request for the service (RFC 3507 4.10): no body, Encapsulated: null-body=0. */
export function buildOptionsRequest(service: IcapServiceUrl, userAgent = 'sandgate'): Buffer {
  return Buffer.from(
    `OPTIONS ${service.uri} ICAP/1.0${CRLF}` +
      `Host: ${hostHeader(service)}${CRLF}` +
      `User-Agent: ${userAgent}${CRLF}` +
      `Encapsulated: null-body=0${CRLF}${CRLF}`,
    'latin1',
  );
}

/**
 * The head of a RESPMOD or REQMOD request: the ICAP request line and headers, then the
 * encapsulated HTTP header section(s) the Encapsulated offsets point into. The chunked body
 * follows (see chunk(), ZERO_CHUNK, IEOF_CHUNK).
 *
 * RESPMOD: req-hdr (a GET for the file), res-hdr (HTTP/1.1 200 OK with the type and length),
 * res-body. REQMOD: req-hdr (a POST of the file with type and length), req-body.
 */
export function buildModRequest(r: ModRequest): Buffer {
  const name = safeFileName(r.name);
  const path = `/${encodeURIComponent(name)}`;
  const type = safeContentType(r.contentType);
  const entity =
    `Content-Type: ${type}${CRLF}` +
    `Content-Length: ${r.size}${CRLF}` +
    `Content-Disposition: attachment; filename="${name}"${CRLF}`;
  let sections: string[];
  let offsets: string;
  if (r.method === 'RESPMOD') {
    const reqHdr = `GET ${path} HTTP/1.1${CRLF}Host: ${ENCAPSULATED_HOST}${CRLF}${CRLF}`;
    const resHdr = `HTTP/1.1 200 OK${CRLF}${entity}${CRLF}`;
    sections = [reqHdr, resHdr];
    offsets = `req-hdr=0, res-hdr=${reqHdr.length}, res-body=${reqHdr.length + resHdr.length}`;
  } else {
    const reqHdr = `POST ${path} HTTP/1.1${CRLF}Host: ${ENCAPSULATED_HOST}${CRLF}${entity}${CRLF}`;
    sections = [reqHdr];
    offsets = `req-hdr=0, req-body=${reqHdr.length}`;
  }
  const head =
    `${r.method} ${r.service.uri} ICAP/1.0${CRLF}` +
    `Host: ${hostHeader(r.service)}${CRLF}` +
    `User-Agent: ${r.userAgent ?? 'sandgate'}${CRLF}` +
    (r.allow204 === false ? '' : `Allow: 204${CRLF}`) +
    (r.preview !== undefined ? `Preview: ${r.preview}${CRLF}` : '') +
    `Encapsulated: ${offsets}${CRLF}${CRLF}`;
  return Buffer.from(head + sections.join(''), 'latin1');
}

/** The size line of one chunk: hex length and CRLF. The data follows, then CHUNK_END. */
export function chunkHeader(length: number): Buffer {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`bad chunk length ${length}`);
  return Buffer.from(`${length.toString(16)}${CRLF}`, 'latin1');
}

/** What ends every chunk's data. */
export const CHUNK_END: Buffer = Buffer.from(CRLF, 'latin1');
/** The zero chunk that ends a body, or a preview that has more to come. */
export const ZERO_CHUNK: Buffer = Buffer.from(`0${CRLF}${CRLF}`, 'latin1');
/** The zero chunk that ends a preview holding the whole body (RFC 3507 4.5): no 100 Continue follows. */
export const IEOF_CHUNK: Buffer = Buffer.from(`0; ieof${CRLF}${CRLF}`, 'latin1');

/** A name safe inside a quoted header parameter and a request path: printable ASCII, no quotes or backslashes. */
export function safeFileName(name: string): string {
  const cleaned = name
    .replace(/[^\x20-\x7e]/g, '_')
    .replace(/["\\]/g, '_')
    .trim()
    .slice(0, 200);
  return cleaned === '' ? 'content.bin' : cleaned;
}

function safeContentType(type: string): string {
  return /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/i.test(type)
    ? type.toLowerCase()
    : 'application/octet-stream';
}

// ---------------------------------------------------------------------------------------------
// Responses

/** Splits a head (without its final empty line) into lines; CRLF or a bare LF end a line. */
function headLines(text: string): string[] {
  return text.split(/\r?\n/);
}

/**
 * Header lines into headers. A line that starts with a space or tab continues the previous header
 * (obsolete folding, which X-Violations-Found uses for its items).
 */
export function parseHeaderLines(lines: readonly string[]): IcapHeaders {
  if (lines.length > MAX_HEADER_LINES)
    throw new IcapProtocolError(`more than ${MAX_HEADER_LINES} header lines`);
  const list: Array<{ name: string; value: string; continuation: string[] }> = [];
  for (const line of lines) {
    if (line === '') continue;
    if (line.startsWith(' ') || line.startsWith('\t')) {
      const last = list.at(-1);
      if (last === undefined) throw new IcapProtocolError('a continuation line before any header');
      last.continuation.push(line.trim());
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new IcapProtocolError(`not a header line: "${printable(line)}"`);
    }
    list.push({ name, value: line.slice(colon + 1).trim(), continuation: [] });
  }
  return new IcapHeaders(list);
}

/** An ICAP response head: "ICAP/1.0 200 OK" and headers (the bytes before the empty line). */
export function parseIcapHead(raw: Buffer | string): IcapHead {
  const text = typeof raw === 'string' ? raw : raw.toString('latin1');
  const lines = headLines(text);
  const statusLine = lines[0] ?? '';
  const m = /^(ICAP\/1\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
  if (m === null) throw new IcapProtocolError(`not an ICAP status line: "${printable(statusLine)}"`);
  return {
    version: m[1] as string,
    status: Number(m[2]),
    reason: (m[3] ?? '').trim(),
    headers: parseHeaderLines(lines.slice(1)),
  };
}

/** "req-hdr=0, res-hdr=822, res-body=1056" (RFC 3507 4.4.1), checked: known names, offsets from 0 and rising, one body entity last. */
export function parseEncapsulated(value: string): Encapsulated {
  const entities: EncapsulatedEntity[] = [];
  for (const part of value.split(',')) {
    const m = /^\s*([a-z-]+)=(\d{1,10})\s*$/i.exec(part);
    const name = m?.[1]?.toLowerCase();
    if (m === null || name === undefined || !ENTITY_NAMES.has(name)) {
      throw new IcapProtocolError(`Encapsulated not understood: "${printable(value)}"`);
    }
    entities.push({ name: name as EntityName, offset: Number(m[2]) });
  }
  const body = entities.at(-1);
  if (body === undefined || !body.name.endsWith('-body')) {
    throw new IcapProtocolError(`Encapsulated without a body entity last: "${printable(value)}"`);
  }
  const headers = entities.slice(0, -1);
  if (headers.some((e) => e.name.endsWith('-body'))) {
    throw new IcapProtocolError(`Encapsulated with more than one body entity: "${printable(value)}"`);
  }
  if ((entities[0] as EncapsulatedEntity).offset !== 0) {
    throw new IcapProtocolError(`Encapsulated does not start at offset 0: "${printable(value)}"`);
  }
  for (let i = 1; i < entities.length; i++) {
    if ((entities[i] as EncapsulatedEntity).offset <= (entities[i - 1] as EncapsulatedEntity).offset) {
      throw new IcapProtocolError(`Encapsulated offsets do not rise: "${printable(value)}"`);
    }
  }
  return { headers, body };
}

/** An encapsulated HTTP head: its first line (status or request line) and headers. */
export interface HttpHead {
  readonly firstLine: string;
  /** The status code of a response head; undefined for a request head. */
  readonly status?: number;
  readonly headers: IcapHeaders;
}

/** One encapsulated header section (req-hdr or res-hdr), including its final empty line. */
export function parseHttpHead(raw: Buffer, kind: 'req-hdr' | 'res-hdr'): HttpHead {
  const text = raw.toString('latin1');
  if (!/\r?\n\r?\n$/.test(text)) throw new IcapProtocolError(`${kind} does not end with an empty line`);
  const lines = headLines(text.replace(/\r?\n\r?\n$/, ''));
  const firstLine = lines[0] ?? '';
  if (kind === 'res-hdr') {
    const m = /^HTTP\/\d\.\d (\d{3})(?: .*)?$/.exec(firstLine);
    if (m === null)
      throw new IcapProtocolError(`not an HTTP status line in res-hdr: "${printable(firstLine)}"`);
    return { firstLine, status: Number(m[1]), headers: parseHeaderLines(lines.slice(1)) };
  }
  if (!/^[A-Z]+ \S+ HTTP\/\d\.\d$/.test(firstLine)) {
    throw new IcapProtocolError(`not an HTTP request line in req-hdr: "${printable(firstLine)}"`);
  }
  return { firstLine, headers: parseHeaderLines(lines.slice(1)) };
}

// ---------------------------------------------------------------------------------------------
// OPTIONS

/** What a service says about itself (RFC 3507 4.10.2). */
export interface IcapOptions {
  /** Upper case: RESPMOD, REQMOD. */
  readonly methods: readonly string[];
  /** Without its quotes. Undefined when the service sent none (the RFC requires one). */
  readonly istag?: string;
  readonly service?: string;
  readonly serviceId?: string;
  /** Bytes of preview the service wants; undefined: it does not support previews. */
  readonly preview?: number;
  readonly maxConnections?: number;
  /** Seconds this answer stays valid; undefined: for ever. */
  readonly ttlSeconds?: number;
  readonly allow204: boolean;
  /** File extensions (lower case, "*" for all others). */
  readonly transferPreview: readonly string[];
  readonly transferIgnore: readonly string[];
  readonly transferComplete: readonly string[];
}

/** An OPTIONS answer's head into IcapOptions. Only a 200 with a Methods header is an answer. */
export function parseOptions(head: IcapHead): IcapOptions {
  if (head.status !== 200) {
    throw new IcapProtocolError(`OPTIONS answered ${head.status} ${printable(head.reason)}`);
  }
  const h = head.headers;
  const methodsValue = h.get('Methods');
  if (methodsValue === undefined) throw new IcapProtocolError('OPTIONS answer without Methods');
  const methods = methodsValue
    .split(',')
    .map((m) => m.trim().toUpperCase())
    .filter((m) => m !== '');
  const istagRaw = h.get('ISTag');
  const istag = istagRaw === undefined ? undefined : istagRaw.replace(/^"(.*)"$/, '$1').slice(0, 64);
  const service = h.get('Service');
  const serviceId = h.get('Service-ID');
  const preview = optionalInt(h.get('Preview'), 'Preview');
  const maxConnections = optionalInt(h.get('Max-Connections'), 'Max-Connections');
  const ttlSeconds = optionalInt(h.get('Options-TTL'), 'Options-TTL');
  if (maxConnections === 0) throw new IcapProtocolError('OPTIONS says Max-Connections: 0');
  const allow = (h.get('Allow') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return {
    methods,
    ...(istag !== undefined ? { istag: printable(istag) } : {}),
    ...(service !== undefined ? { service: printable(service) } : {}),
    ...(serviceId !== undefined ? { serviceId: printable(serviceId) } : {}),
    ...(preview !== undefined ? { preview } : {}),
    ...(maxConnections !== undefined ? { maxConnections } : {}),
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    allow204: allow.includes('204'),
    transferPreview: extensionList(h.get('Transfer-Preview')),
    transferIgnore: extensionList(h.get('Transfer-Ignore')),
    transferComplete: extensionList(h.get('Transfer-Complete')),
  };
}

function optionalInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value.trim()))
    throw new IcapProtocolError(`OPTIONS ${name} is not a number: "${printable(value)}"`);
  return Number(value.trim());
}

function extensionList(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((s) => s.trim().toLowerCase().replace(/^\./, ''))
    .filter((s) => s !== '');
}

/**
 * How the service wants a file with this name sent (RFC 3507 4.10.2, Transfer-*): in a preview,
 * whole, or not at all. An extension in no list falls under the list that holds "*"; with no "*"
 * anywhere, a preview. sandgate never skips content: 'ignore' is sent whole like 'complete'.
 */
export function transferMode(options: IcapOptions, fileName: string): 'preview' | 'complete' | 'ignore' {
  const dot = fileName.lastIndexOf('.');
  const ext = dot > 0 ? fileName.slice(dot + 1).toLowerCase() : '';
  const lists: Array<['preview' | 'complete' | 'ignore', readonly string[]]> = [
    ['complete', options.transferComplete],
    ['ignore', options.transferIgnore],
    ['preview', options.transferPreview],
  ];
  if (ext !== '') {
    for (const [mode, list] of lists) if (list.includes(ext)) return mode;
  }
  for (const [mode, list] of lists) if (list.includes('*')) return mode;
  return 'preview';
}

// ---------------------------------------------------------------------------------------------

/** For error messages and logs: no control characters, bounded length. */
export function printable(text: string, max = 200): string {
  let clean = '';
  for (const ch of text) {
    const code = ch.charCodeAt(0);
    clean += code < 0x20 || code === 0x7f ? '?' : ch;
  }
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
