import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { SandgateError } from '../core/errors.js';
import type { Envelope } from '../core/message.js';

/**
 * A CommuniGate queue file (`Queue/<id>.msg`, `Queue/57/<id>.msg`): envelope lines (one-letter
 * tag, a space, data), the first empty line, then the RFC 5322 message, unchanged. The file is
 * CommuniGate's live queue file: it is only ever opened for reading.
 */
export interface QueueFile {
  /** Absolute path of the queue file. */
  readonly path: string;
  readonly envelope: Envelope;
  /** Byte offset of the message (just after the first empty line). */
  readonly bodyOffset: number;
  /** Bytes of the message (file size minus bodyOffset). */
  readonly size: number;
  /** The submitting module from the S line (SMTP, HTTP, DSN, RULE, ...). */
  readonly module?: string;
  /** The authenticated submitter from the S line, if any. */
  readonly authUser?: string;
  /** The domain from the A line, if any. */
  readonly localDomain?: string;
}

/** The parsed envelope block, without the file around it. */
export interface ParsedEnvelope {
  readonly envelope: Envelope;
  readonly module?: string;
  readonly authUser?: string;
  readonly localDomain?: string;
}

/**
 * How queue files are opened, every time (the envelope here, the message by FileMessage):
 * read-only; O_NONBLOCK, so that a FIFO (or a device) put where a queue file should be cannot
 * block a libuv pool thread (and with it every later request and the process's exit); O_NOFOLLOW,
 * so that the queue file itself is never a symbolic link (ELOOP). Directories on the way may be
 * links (a Queue directory on another disk): resolveQueuePath checks the path lexically.
 */
export const QUEUE_FILE_FLAGS =
  constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOFOLLOW ?? 0);

/** The envelope is read in pieces of this size until the first empty line. */
const READ_CHUNK = 64 * 1024;
/** An envelope this long (thousands of recipients) is refused as malformed. */
export const MAX_ENVELOPE_BYTES = 16 * 1024 * 1024;

/**
 * The absolute path of a FILE argument, relative to the base directory. Back-slashes (Windows
 * servers) count as separators. Throws ERR_INPUT_NOT_FOUND (details.reason 'outside-base') when the
 * path leaves the base directory; the check is lexical, so a Queue directory that is a symlink
 * to another disk still works.
 */
export function resolveQueuePath(baseDir: string, raw: string): string {
  const base = resolve(baseDir);
  const target = resolve(base, raw.replace(/\\/g, '/'));
  const rel = relative(base, target);
  if (rel === '' || rel === '..' || rel.startsWith('../') || isAbsolute(rel)) {
    throw new SandgateError('ERR_INPUT_NOT_FOUND', 'the queue file path leaves the base directory', {
      details: { reason: 'outside-base' },
    });
  }
  return target;
}

/**
 * Where the message starts: the byte after the first empty line (LF LF, LF CR LF, or an empty
 * first line). -1 when there is no empty line in `buf`.
 */
export function findBodyOffset(buf: Buffer, atFileStart = true): number {
  if (atFileStart && buf[0] === 0x0a) return 1;
  if (atFileStart && buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  let from = 0;
  for (;;) {
    const lf = buf.indexOf(0x0a, from);
    if (lf === -1 || lf + 1 >= buf.length) return -1;
    const next = buf[lf + 1];
    if (next === 0x0a) return lf + 2;
    if (next === 0x0d) {
      if (lf + 2 >= buf.length) return -1;
      if (buf[lf + 2] === 0x0a) return lf + 3;
    }
    from = lf + 1;
  }
}

const TAGGED = /^[A-Za-z](?: |$)/;

/**
 * Parses the envelope block (the bytes before the first empty line). Tags in any order; P is the
 * sender (`<>` for bounces), one R per recipient (address in the last `<...>`), S the module and
 * client address (last `[...]`), A the local domain, O options; unknown tags are ignored. Throws
 * ERR_MESSAGE_MALFORMED when a line is not tagged (the file has no envelope, so splitting at the
 * first empty line would cut the message's own header).
 */
export function parseEnvelope(block: string, frontEnd = 'helper'): ParsedEnvelope {
  let sender = '';
  const recipients: string[] = [];
  let clientAddress: string | undefined;
  let module: string | undefined;
  let authUser: string | undefined;
  let localDomain: string | undefined;

  for (const rawLine of block.split('\n')) {
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (line === '') continue;
    if (!TAGGED.test(line)) {
      throw new SandgateError(
        'ERR_MESSAGE_MALFORMED',
        'the queue file has a line that is not an envelope line',
        {
          details: { reason: 'untagged-line' },
        },
      );
    }
    const data = line.slice(2);
    switch (line.charAt(0).toUpperCase()) {
      case 'P':
        sender = lastBracketed(data, '<', '>') ?? '';
        break;
      case 'R': {
        const rcpt = lastBracketed(data, '<', '>');
        if (rcpt !== undefined && rcpt !== '') recipients.push(rcpt);
        break;
      }
      case 'S': {
        const ip = lastBracketed(data, '[', ']');
        if (ip !== undefined && ip !== '' && ip !== '0.0.0.0') clientAddress = ip;
        authUser = lastBracketed(data, '<', '>') || undefined;
        const words = data
          .replace(/<[^>]*>/g, ' ')
          .replace(/\[[^\]]*\]/g, ' ')
          .trim()
          .split(/[ \t]+/)
          .filter((w) => w !== '');
        module = words[words.length - 1];
        break;
      }
      case 'A': {
        const domain = data
          .replace(/\[[^\]]*\]/g, ' ')
          .trim()
          .split(/[ \t]+/)[0];
        if (domain) localDomain = domain;
        break;
      }
      default:
        break;
    }
  }
  return {
    envelope: { sender, recipients, frontEnd, ...(clientAddress !== undefined ? { clientAddress } : {}) },
    ...(module !== undefined ? { module } : {}),
    ...(authUser !== undefined ? { authUser } : {}),
    ...(localDomain !== undefined ? { localDomain } : {}),
  };
}

function lastBracketed(text: string, open: string, close: string): string | undefined {
  const end = text.lastIndexOf(close);
  if (end === -1) return undefined;
  const start = text.lastIndexOf(open, end);
  if (start === -1) return undefined;
  return text.slice(start + 1, end).trim();
}

/**
 * Opens a queue file (QUEUE_FILE_FLAGS), checks with fstat that it is a regular file before
 * reading a byte, reads its envelope (up to the first empty line) and returns it with the offset
 * and size of the message. Errors: ERR_INPUT_NOT_FOUND with details.reason 'missing', 'symlink'
 * (the file itself is a symbolic link), 'not-a-file' (a FIFO, a directory, a device, a socket)
 * or 'unreadable'; ERR_MESSAGE_MALFORMED (no empty line, untagged line).
 */
export async function readQueueFile(path: string, maxEnvelopeBytes = MAX_ENVELOPE_BYTES): Promise<QueueFile> {
  let handle;
  try {
    handle = await open(path, QUEUE_FILE_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SandgateError('ERR_INPUT_NOT_FOUND', 'the queue file cannot be opened', {
      cause: err,
      details: { reason: openFailure(code), errno: code },
    });
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw new SandgateError('ERR_INPUT_NOT_FOUND', 'the queue file path is not a regular file', {
        details: { reason: 'not-a-file' },
      });
    }
    const parts: Buffer[] = [];
    let total = 0;
    let tail = Buffer.alloc(0);
    let offset = -1;
    const limit = Math.min(stat.size, maxEnvelopeBytes);
    while (offset === -1 && total < limit) {
      const want = Math.min(READ_CHUNK, limit - total);
      const chunk = Buffer.alloc(want);
      const { bytesRead } = await handle.read(chunk, 0, want, total);
      if (bytesRead === 0) break;
      const piece = chunk.subarray(0, bytesRead);
      if (total === 0) {
        offset = findBodyOffset(piece);
      } else {
        // The last two bytes of the previous read: the empty line may straddle two reads.
        const found = findBodyOffset(Buffer.concat([tail, piece]), false);
        if (found !== -1) offset = total - tail.length + found;
      }
      parts.push(piece);
      total += bytesRead;
      tail = Buffer.concat([tail, piece]).subarray(-2);
    }
    if (offset === -1) {
      throw new SandgateError(
        'ERR_MESSAGE_MALFORMED',
        'the queue file has no empty line after the envelope',
        {
          details: { reason: total >= maxEnvelopeBytes ? 'envelope-too-long' : 'no-empty-line' },
        },
      );
    }
    const parsed = parseEnvelope(Buffer.concat(parts, total).subarray(0, offset).toString('utf8'));
    return { path, bodyOffset: offset, size: stat.size - offset, ...parsed };
  } catch (err) {
    if (err instanceof SandgateError) throw err;
    throw new SandgateError('ERR_INPUT_NOT_FOUND', 'the queue file cannot be read', {
      cause: err,
      details: { reason: 'unreadable', errno: (err as NodeJS.ErrnoException).code },
    });
  } finally {
    await handle.close();
  }
}

/** Why open() failed: O_NOFOLLOW on a symbolic link is ELOOP (EMLINK on FreeBSD); ENXIO: a socket. */
function openFailure(code: string | undefined): string {
  switch (code) {
    case 'ENOENT':
      return 'missing';
    case 'ELOOP':
    case 'EMLINK':
      return 'symlink';
    case 'ENXIO':
      return 'not-a-file';
    case undefined:
    default:
      return 'unreadable';
  }
}
