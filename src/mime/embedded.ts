/**
 * Files embedded in the text of a part, which mail clients show as attachments: uuencode blocks
 * (`begin 644 name` ... `end`, also as the x-uuencode transfer encodings), `begin-base64` blocks
 * (uuencode -m), single-part yEnc (`=ybegin` ... `=yend`), and base64 `data:` URIs in HTML.
 * Each decoded block is handed on as a part of its own (WalkedPart.embedded), under the same
 * rules and limits as any attachment. Multi-part yEnc is flagged besides (anomalies.ts flags a
 * BinHex part by its content type: no current client decodes BinHex inline in a text).
 * docs/rules.md says what is decoded and why.
 */
import { deliver } from './deliver.js';
import type { PartSpool } from './part-spool.js';
import type { EmbeddedKind } from './types.js';
import { UU_ENCODINGS } from './anomalies.js';
import { LimitReached, type PartMeta, type WalkState } from './walk-state.js';

/** Longest line looked at as a whole; a longer one is read in pieces of this size. */
const MAX_LINE = 64 * 1024;
/** Longest data: URI header (media type and parameters) believed. */
const MAX_DATA_URI_HEADER = 256;

const BEGIN_UU = /^begin[ \t]+[0-7]{1,4}[ \t]+(.*?)[ \t]*$/;
const BEGIN_B64 = /^begin-base64[ \t]+[0-7]{1,4}[ \t]+(.*?)[ \t]*$/;

/** `data:` in its common spellings (the reader itself is case-blind). */
const DATA_MARKERS = ['ata:', 'ATA:'].map((m) => Buffer.from(m));

/** Whether the walker looks for embedded files in this part's decoded text. */
export function holdsText(meta: PartMeta): boolean {
  return (
    meta.embedded === undefined &&
    (meta.contentType.startsWith('text/') || UU_ENCODINGS.has(meta.encoding ?? ''))
  );
}

/**
 * Decodes the files embedded in one spooled text part and delivers each as a part at the text's
 * depth (a client shows them beside the text). A first look with indexOf finds most texts
 * without any marker; only texts with one are read line by line.
 */
export async function walkEmbedded(state: WalkState, text: PartSpool, meta: PartMeta): Promise<void> {
  const html = meta.contentType === 'text/html';
  const uuEncoded = UU_ENCODINGS.has(meta.encoding ?? '');
  const look = await firstLook(text, html);
  let found = 0;
  const emit = async (block: DecodedBlock) => {
    found++;
    state.parts++;
    const path = `${meta.path}/${block.kind}-${found}`;
    if (state.parts > state.options.limits.maxParts) {
      block.spool.dispose();
      throw new LimitReached('parts', path);
    }
    await deliver(state, block.spool, {
      path,
      depth: meta.depth,
      contentType: block.contentType,
      ...(block.name !== undefined && block.name !== '' ? { filename: block.name } : {}),
      isAttachment: true,
      embedded: block.kind,
    });
  };
  if (look.lineBlocks || uuEncoded) {
    const reader = new BlockReader(state, meta.path);
    try {
      for await (const line of lines(text)) {
        state.checkAborted();
        const block = await reader.line(line);
        if (block !== undefined) await emit(block);
      }
      const last = await reader.end();
      if (last !== undefined) await emit(last);
    } finally {
      reader.abandon();
    }
  }
  if (html && look.dataUri) {
    const uris = new DataUriReader(state, meta.path);
    try {
      for await (const chunk of text.open() as AsyncIterable<Buffer>) {
        state.checkAborted();
        for (const block of await uris.push(chunk)) await emit(block);
      }
      const last = await uris.end();
      if (last !== undefined) await emit(last);
    } finally {
      uris.abandon();
    }
  }
  if (uuEncoded && found === 0) state.flag('uuencode-without-begin', meta.path);
}

interface DecodedBlock {
  readonly kind: EmbeddedKind;
  readonly name?: string;
  readonly contentType: string;
  readonly spool: PartSpool;
}

/**
 * The cheap first look over the bytes: is there a `begin` at a line start (`begin`,
 * `begin-base64`, `=ybegin`), and, in HTML, a `data:`? One native search per marker; most texts
 * have neither and are not read again.
 */
async function firstLook(text: PartSpool, html: boolean): Promise<{ lineBlocks: boolean; dataUri: boolean }> {
  const look = { lineBlocks: false, dataUri: false };
  const check = (buf: Buffer, from: number) => {
    if (!look.lineBlocks) look.lineBlocks = beginAtLineStart(buf, from);
    if (html && !look.dataUri) look.dataUri = DATA_MARKERS.some((m) => buf.includes(m, from));
  };
  // The seam between two chunks is checked apart, with the last bytes seen before it (which may
  // span several small chunks); before the first chunk stands a line break: a line starts there.
  let tail: Buffer = NEWLINE;
  await text.scan((chunk) => {
    check(Buffer.concat([tail, chunk.subarray(0, SEAM)]), 0);
    check(chunk, 0);
    tail =
      chunk.length >= SEAM
        ? Buffer.from(chunk.subarray(chunk.length - SEAM))
        : Buffer.concat([tail, chunk]).subarray(-SEAM);
    return look.lineBlocks && (look.dataUri || !html) ? 'stop' : undefined;
  });
  return look;
}

const NEWLINE = Buffer.from('\n');
const BEGIN = Buffer.from('begin');
/** Bytes around a chunk seam that a marker with its line start can span: "\n=ybegin". */
const SEAM = 8;

/** A `begin` that starts a line, or follows `=y` at a line start. */
function beginAtLineStart(buf: Buffer, from: number): boolean {
  for (let at = buf.indexOf(BEGIN, from); at !== -1; at = buf.indexOf(BEGIN, at + 1)) {
    if (at >= 1 && buf[at - 1] === 0x0a) return true;
    if (at >= 3 && buf[at - 1] === 0x79 && buf[at - 2] === 0x3d && buf[at - 3] === 0x0a) return true;
  }
  return false;
}

/** The lines of a spool, without their line ends; a line longer than MAX_LINE comes in pieces. */
async function* lines(text: PartSpool): AsyncGenerator<Buffer> {
  let carry: Buffer = Buffer.alloc(0);
  for await (const chunk of text.open() as AsyncIterable<Buffer>) {
    let buf = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
    let start = 0;
    for (let lf = buf.indexOf(0x0a); lf !== -1; lf = buf.indexOf(0x0a, start)) {
      yield trimCr(buf.subarray(start, lf));
      start = lf + 1;
    }
    buf = buf.subarray(start);
    while (buf.length > MAX_LINE) {
      yield buf.subarray(0, MAX_LINE);
      buf = buf.subarray(MAX_LINE);
    }
    carry = Buffer.from(buf);
  }
  if (carry.length > 0) yield trimCr(carry);
}

function trimCr(line: Buffer): Buffer {
  return line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, line.length - 1) : line;
}

type Decoder = (line: Buffer) => Buffer;

interface OpenBlock {
  readonly kind: EmbeddedKind;
  readonly name: string | undefined;
  readonly decode: Decoder;
  /** The line that ends the block. */
  readonly isEnd: (line: string) => boolean;
  readonly spool: PartSpool;
}

/** A begin line seen; the block starts only if the next line is a well-formed data line. */
interface Candidate {
  readonly kind: 'uuencode' | 'base64';
  readonly name: string;
}

/**
 * Line by line: finds begin lines, decodes the lines of the block into a spool, and returns the
 * block when its end line (or the end of the text) comes. Decoding is lenient, as uudecode's is:
 * what a client can show, we scan.
 */
class BlockReader {
  private open: OpenBlock | undefined;
  private candidate: Candidate | undefined;

  constructor(
    private readonly state: WalkState,
    private readonly path: string,
  ) {}

  async line(line: Buffer): Promise<DecodedBlock | undefined> {
    const open = this.open;
    if (open !== undefined) {
      const text = line.toString('latin1');
      if (open.isEnd(text)) return this.close();
      if (open.kind === 'yenc' && text.startsWith('=y')) {
        if (text.startsWith('=ypart')) this.state.flag('yenc-multipart', this.path);
        return undefined;
      }
      await open.spool.write(open.decode(line));
      return undefined;
    }
    const candidate = this.candidate;
    this.candidate = undefined;
    if (candidate !== undefined) {
      const valid = candidate.kind === 'uuencode' ? isUuLine(line) : isBase64Line(line);
      if (valid) {
        const block = this.start(
          candidate.kind,
          candidate.name,
          candidate.kind === 'uuencode' ? uuDecodeLine : base64Decoder(),
          candidate.kind === 'uuencode' ? (t) => t.trimEnd() === 'end' : (t) => t.trimEnd() === '====',
        );
        await block.spool.write(block.decode(line));
        return undefined;
      }
    }
    this.begin(line.toString('latin1'));
    return undefined;
  }

  /** The end of the text closes an unterminated block: a client shows what it could decode. */
  async end(): Promise<DecodedBlock | undefined> {
    return this.open !== undefined ? this.close() : undefined;
  }

  abandon(): void {
    this.open?.spool.dispose();
    this.open = undefined;
  }

  private begin(text: string): void {
    const uu = BEGIN_UU.exec(text);
    if (uu !== null) {
      this.candidate = { kind: 'uuencode', name: uu[1] ?? '' };
      return;
    }
    const b64 = BEGIN_B64.exec(text);
    if (b64 !== null) {
      this.candidate = { kind: 'base64', name: b64[1] ?? '' };
      return;
    }
    if (!text.startsWith('=ybegin ')) return;
    const params = yencParams(text);
    // The yEnc 1.3 header names line, size and name; without them it is prose, not a block.
    if (params.size === undefined || params.name === undefined || params.line === undefined) return;
    if (params.part !== undefined || (params.total !== undefined && params.total !== '1')) {
      this.state.flag('yenc-multipart', this.path);
    }
    this.start('yenc', params.name, yencDecodeLine, (t) => t.startsWith('=yend'));
  }

  private start(
    kind: EmbeddedKind,
    name: string | undefined,
    decode: Decoder,
    isEnd: OpenBlock['isEnd'],
  ): OpenBlock {
    const spool = this.state.newSpool(`${this.path}/${kind}`);
    this.open = { kind, name: name === '' ? undefined : name, decode, isEnd, spool };
    return this.open;
  }

  private async close(): Promise<DecodedBlock> {
    const open = this.open as OpenBlock;
    this.open = undefined;
    try {
      await open.spool.end();
    } catch (err) {
      open.spool.dispose();
      throw err;
    }
    return {
      kind: open.kind,
      ...(open.name !== undefined ? { name: open.name } : {}),
      contentType: 'application/octet-stream',
      spool: open.spool,
    };
  }
}

/** A uuencoded data line: its length character, then the characters that length needs. */
function isUuLine(line: Buffer): boolean {
  if (line.length === 0) return false;
  const n = ((line[0] as number) - 32) & 63;
  const needed = Math.ceil(n / 3) * 4;
  if (line.length - 1 < needed) return false;
  for (let i = 1; i <= needed; i++) {
    const c = line[i] as number;
    if (c < 32 || c > 96) return false;
  }
  return true;
}

/** Decodes one uuencoded line as uudecode does: the first character says how many bytes follow. */
function uuDecodeLine(line: Buffer): Buffer {
  if (line.length === 0) return Buffer.alloc(0);
  const n = ((line[0] as number) - 32) & 63;
  const out = Buffer.alloc(n);
  const at = (i: number) => ((line[i] ?? 32) - 32) & 63;
  for (let o = 0, i = 1; o < n; i += 4) {
    const a = at(i);
    const b = at(i + 1);
    const c = at(i + 2);
    const d = at(i + 3);
    out[o++] = (a << 2) | (b >> 4);
    if (o < n) out[o++] = ((b & 15) << 4) | (c >> 2);
    if (o < n) out[o++] = ((c & 3) << 6) | d;
  }
  return out;
}

const BASE64_CHARS = /^[A-Za-z0-9+/]+=*$/;

function isBase64Line(line: Buffer): boolean {
  return line.length >= 4 && BASE64_CHARS.test(line.toString('latin1').trim());
}

/** Base64 over lines: characters carried until a multiple of four, other characters skipped. */
function base64Decoder(): Decoder {
  let carry = '';
  return (line) => {
    const text = carry + line.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, '');
    const whole = text.length - (text.length % 4);
    carry = text.slice(whole);
    return Buffer.from(text.slice(0, whole), 'base64');
  };
}

/** Decodes one yEnc data line: each byte minus 42, `=x` is x minus 106 (yEnc 1.3). */
function yencDecodeLine(line: Buffer): Buffer {
  const out = Buffer.alloc(line.length);
  let o = 0;
  for (let i = 0; i < line.length; i++) {
    let c = line[i] as number;
    if (c === 0x3d) {
      i++;
      if (i >= line.length) break;
      c = ((line[i] as number) - 64) & 0xff;
    }
    out[o++] = (c - 42) & 0xff;
  }
  return out.subarray(0, o);
}

/** The keywords of a =ybegin line; name is the rest of the line (it may hold spaces). */
function yencParams(text: string): Record<string, string | undefined> {
  const params: Record<string, string | undefined> = {};
  const nameAt = text.indexOf(' name=');
  const head = nameAt === -1 ? text : text.slice(0, nameAt);
  if (nameAt !== -1) params.name = text.slice(nameAt + 6).trim();
  for (const m of head.matchAll(/\b(part|total|line|size)=(\S+)/g)) params[m[1] as string] = m[2];
  return params;
}

/**
 * base64 `data:` URIs in HTML, read as a stream of bytes: after `data:` a media type and
 * parameters up to `,`; with `;base64` the payload runs while base64 characters (or the tabs and
 * line breaks a URL parser drops) come. Percent-encoded URIs are left alone: their bytes are
 * the HTML's own, already scanned as text.
 */
class DataUriReader {
  private matched = 0;
  private header = '';
  private mode: 'scan' | 'header' | 'payload' = 'scan';
  private contentType = 'text/plain';
  private spool: PartSpool | undefined;
  private pending = '';

  constructor(
    private readonly state: WalkState,
    private readonly path: string,
  ) {}

  async push(chunk: Buffer): Promise<DecodedBlock[]> {
    const out: DecodedBlock[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i] as number;
      switch (this.mode) {
        case 'scan': {
          const want = DATA_PREFIX.charCodeAt(this.matched);
          this.matched = (c | 0x20) === want ? this.matched + 1 : (c | 0x20) === 0x64 ? 1 : 0;
          if (this.matched === DATA_PREFIX.length) {
            this.mode = 'header';
            this.header = '';
            this.matched = 0;
          }
          break;
        }
        case 'header':
          if (c === 0x2c) {
            this.startPayload();
          } else if (c <= 0x20 || c === 0x22 || c === 0x27 || c === 0x3c || c === 0x3e || c === 0x29) {
            this.mode = 'scan';
          } else {
            this.header += String.fromCharCode(c);
            if (this.header.length > MAX_DATA_URI_HEADER) this.mode = 'scan';
          }
          break;
        case 'payload': {
          // A run of payload characters at once; the tabs and line breaks in it are dropped.
          let j = i;
          while (j < chunk.length && isPayloadChar(chunk[j] as number)) j++;
          if (j > i) {
            this.pending += chunk.toString('latin1', i, j).replace(/[\t\r\n]/g, '');
            if (this.pending.length >= 64 * 1024) await this.flush(false);
            i = j - 1;
            break;
          }
          const block = await this.finish();
          if (block !== undefined) out.push(block);
          i--; // the character that ended the payload may start the next `data:`
          break;
        }
      }
    }
    return out;
  }

  async end(): Promise<DecodedBlock | undefined> {
    return this.mode === 'payload' ? this.finish() : undefined;
  }

  abandon(): void {
    this.spool?.dispose();
    this.spool = undefined;
  }

  private startPayload(): void {
    const params = this.header.split(';').map((p) => p.trim().toLowerCase());
    if (params[params.length - 1] !== 'base64') {
      this.mode = 'scan';
      return;
    }
    const type = params[0] ?? '';
    this.contentType = /^[a-z0-9.+-]+\/[a-z0-9.+-]+$/.test(type) ? type : 'text/plain';
    this.spool = this.state.newSpool(`${this.path}/data-uri`);
    this.pending = '';
    this.mode = 'payload';
  }

  private async flush(last: boolean): Promise<void> {
    const whole = last ? this.pending.length : this.pending.length - (this.pending.length % 4);
    const bytes = Buffer.from(this.pending.slice(0, whole), 'base64');
    this.pending = this.pending.slice(whole);
    if (bytes.length > 0) await this.spool?.write(bytes);
  }

  private async finish(): Promise<DecodedBlock | undefined> {
    this.mode = 'scan';
    const spool = this.spool;
    if (spool === undefined) return undefined;
    try {
      await this.flush(true);
      await spool.end();
    } catch (err) {
      this.abandon();
      throw err;
    }
    this.spool = undefined;
    if (spool.size === 0) {
      spool.dispose();
      return undefined;
    }
    return { kind: 'data-uri', contentType: this.contentType, spool };
  }
}

const DATA_PREFIX = 'data:';

function isPayloadChar(c: number): boolean {
  return (
    c === 0x09 ||
    c === 0x0a ||
    c === 0x0d ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2b ||
    c === 0x2f ||
    c === 0x3d
  );
}
