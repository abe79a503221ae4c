/**
 * The clamd wire protocol, pure: command framing, INSTREAM chunk headers, reply parsing.
 * We always use the `z` form (NUL-terminated command and reply), see clamd(8).
 */

import { printable as printableText } from '../../core/text.js';

/** Longest reply we accept; clamd's replies are a line. Anything longer is a protocol error. */
export const MAX_REPLY_BYTES = 8 * 1024;

export type ClamdCommand = 'PING' | 'VERSION' | 'INSTREAM';

export function encodeCommand(command: ClamdCommand): Buffer {
  return Buffer.from(`z${command}\0`, 'latin1');
}

/** The 4-byte big-endian length that precedes every INSTREAM chunk. */
export function chunkHeader(length: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(length, 0);
  return b;
}

/** The zero-length chunk that ends an INSTREAM. */
export const INSTREAM_END: Buffer = Buffer.alloc(4);

/** What an INSTREAM reply says. Only `ok` is clean; only `found` is a detection. */
export type InstreamReply =
  | { readonly kind: 'ok' }
  | { readonly kind: 'found'; readonly signature: string }
  | { readonly kind: 'size-limit'; readonly text: string }
  | { readonly kind: 'error'; readonly text: string }
  | { readonly kind: 'garbage'; readonly text: string };

/**
 * Reads one INSTREAM reply (without its NUL). Anything that is not exactly `stream: OK` or
 * `stream: <name> FOUND` is an error or garbage, never clean or malicious.
 */
export function parseInstreamReply(raw: string): InstreamReply {
  const text = raw.replace(/[\0\r\n]+$/, '');
  if (hasControl(text, true)) return { kind: 'garbage', text: printable(text) };
  if (/^(?:stream: )?INSTREAM size limit exceeded\.? ?ERROR$/.test(text)) return { kind: 'size-limit', text };
  if (text.endsWith(' ERROR')) return { kind: 'error', text };
  if (text === 'stream: OK') return { kind: 'ok' };
  const found = /^stream: (.+) FOUND$/.exec(text);
  if (found) {
    // ExtendedDetectionInfo appends "(<md5>:<size>)" to the name: keep the name only.
    const signature = (found[1] as string).replace(/\([0-9a-fA-F]{32,64}:\d+\)$/, '').trim();
    if (signature.length > 0 && !/\s/.test(signature)) return { kind: 'found', signature };
  }
  return { kind: 'garbage', text: printable(text) };
}

/** PING must be answered with exactly PONG. */
export function isPong(raw: string): boolean {
  return raw.replace(/[\0\r\n]+$/, '') === 'PONG';
}

/**
 * A VERSION reply: "ClamAV 1.4.6" or "ClamAV 1.4.6/27450/Mon Nov 25 09:32:45 2024" (engine /
 * database version / database date). Returns undefined for anything else.
 */
export function parseVersion(raw: string): string | undefined {
  const text = raw.replace(/[\0\r\n]+$/, '');
  if (!/^ClamAV .{1,200}$/.test(text) || hasControl(text, false)) return undefined;
  return text;
}

/** For error messages: one line, no control characters, bounded length. */
export function printable(text: string): string {
  return printableText(text, { max: 200 });
}

function isControl(code: number): boolean {
  return code < 0x20 || code === 0x7f;
}

/** Control characters; `allowTabNewline` lets \t and \n through (they make a reply garbage later anyway). */
function hasControl(text: string, allowTabNewline: boolean): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (allowTabNewline && (code === 0x09 || code === 0x0a)) continue;
    if (isControl(code)) return true;
  }
  return false;
}
