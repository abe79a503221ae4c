import type { Readable } from 'node:stream';

/** Bomb and size limits of one walk. Exceeding one ends the walk (WalkSummary.limit). */
export interface WalkLimits {
  /** Containers (attached messages, archives) nested deeper than this end the walk. */
  readonly maxDepth: number;
  /** MIME leaf parts, counted over the whole message including attached messages. */
  readonly maxParts: number;
  /** Archive members, counted over the whole message. */
  readonly maxArchiveMembers: number;
  /** Decompressed / compressed size of one archive member. */
  readonly maxExpansionRatio: number;
  /** The ratio is only judged once a member has expanded past this many bytes. */
  readonly ratioMinBytes: number;
  /** Decoded bytes of all parts and members together. */
  readonly maxTotalBytes: number;
}

export interface WalkOptions {
  readonly limits: WalkLimits;
  /** Directory for part spools above memoryThreshold (created if missing). */
  readonly spoolDir: string;
  /** Decoded parts up to this many bytes stay in memory. Default 1 MiB. */
  readonly memoryThreshold?: number;
  /** Expand zip archives into their members (default true). */
  readonly expandArchives?: boolean;
  readonly signal?: AbortSignal;
  /** Sees every raw chunk of the message as it is read (a cheap tap for a raw-byte search). */
  readonly onRaw?: (chunk: Buffer) => void;
}

export type WalkLimitKind = 'depth' | 'members' | 'ratio' | 'total-bytes' | 'parts';

/** How a block embedded in a text part was encoded (see embedded.ts); a decoded block is a part of its own. */
export type EmbeddedKind = 'uuencode' | 'base64' | 'yenc' | 'data-uri';

/**
 * Something a parser and a mail client may read differently, or content the walker cannot decode
 * that a client may still show (docs/SECURITY.md, "Parser ambiguities"). The walk goes on; the
 * rules engine answers suspicious with the kind as its reason.
 */
export type AnomalyKind =
  /** Two Content-Type fields in one header block: which one a client uses differs. */
  | 'duplicate-content-type'
  /** Two Content-Transfer-Encoding fields in one header block. */
  | 'duplicate-transfer-encoding'
  /** Two Content-Disposition fields in one header block. */
  | 'duplicate-content-disposition'
  /** A boundary parameter given twice in one Content-Type. */
  | 'duplicate-boundary'
  /** A multipart with a base64 or quoted-printable transfer encoding (RFC 2045 forbids it). */
  | 'encoded-multipart'
  /** A transfer encoding the walker does not decode (the bytes are scanned as they are). */
  | 'unknown-transfer-encoding'
  /** A body line that starts like a delimiter of an enclosing multipart but is not one (--AAAB under AAA). */
  | 'boundary-prefix'
  /** A part that is not multipart but declares a boundary, with that boundary's delimiter lines in its body. */
  | 'boundary-in-single-part'
  /** A delimiter line after the closing delimiter of its multipart: parts a client may still show. */
  | 'boundary-after-close'
  /** A NUL or other control character in a file name (setup.exe\0.txt). */
  | 'control-char-in-filename'
  /** A uuencode transfer encoding without a begin line to decode. */
  | 'uuencode-without-begin'
  /** A multi-part yEnc block (=ypart): one piece of a file split over several messages. */
  | 'yenc-multipart'
  /** BinHex 4.0 content, which the walker does not decode. */
  | 'binhex';

export interface WalkAnomaly {
  readonly kind: AnomalyKind;
  /** The part path where it was seen. */
  readonly at: string;
}

/**
 * One decoded MIME leaf, attached message or archive member. Valid only during the onPart
 * callback: its bytes are disposed when the callback's promise settles. Read its fields and call
 * its methods on it; do not spread or destructure it (sha256 is an accessor computed when first
 * read, open and scan are methods).
 */
export interface WalkedPart {
  /** IMAP-style part number ("2.1"); archive members append "/name" ("2.1/inner.zip/a.exe"). */
  readonly path: string;
  /** 0 for the message's own parts, +1 inside each attached message or archive. */
  readonly depth: number;
  /** Lower-case MIME type; archive members get application/octet-stream. */
  readonly contentType: string;
  readonly filename?: string;
  /**
   * Other names the part goes by, when they differ from `filename`: a Content-Type name beside a
   * Content-Disposition filename, a name cut at a control character. Name rules check them all.
   */
  readonly otherNames?: readonly string[];
  /** Decoded size in bytes (0 for a member yielded without content: encrypted, unsupported, damaged). */
  readonly size: number;
  /** Hex SHA-256 of the decoded bytes ('' for a member yielded without content). */
  readonly sha256: string;
  /** Content-Disposition attachment, a named part, or an archive member. */
  readonly isAttachment: boolean;
  /** Set when the walker will also walk into this part: its members or inner parts follow it. */
  readonly container?: 'zip' | 'gzip' | 'message';
  /** A block decoded out of a text part (uuencode, begin-base64, yEnc, an HTML data: URI). */
  readonly embedded?: EmbeddedKind;
  /** An archive member whose bytes are encrypted (general purpose flag bit 0): no content. */
  readonly encrypted?: boolean;
  /** An archive member the walker cannot decompress (method other than stored or deflate). */
  readonly unsupportedMethod?: number;
  /** An archive member whose local header or compressed bytes are damaged: no content. */
  readonly damaged?: boolean;
  /** The first bytes (up to 4 KiB) of the decoded content, for magic-number checks. */
  readonly head: Buffer;
  /** A fresh stream over the decoded bytes; may be called several times. */
  open(): Readable;
  /**
   * Visits the decoded bytes in order, cheaper than open() for a search: the chunk buffer may be
   * reused between calls, so `visit` must not keep it. Returning 'stop' ends the visit early.
   */
  scan(visit: (chunk: Buffer) => void | 'stop', signal?: AbortSignal): Promise<void>;
}

export interface WalkSummary {
  /** MIME leaf parts seen (attached messages' parts included). */
  readonly parts: number;
  /** Archive members seen. */
  readonly members: number;
  /** Decoded bytes spooled. */
  readonly bytes: number;
  /** Set when a limit ended the walk early. */
  readonly limit?: { readonly kind: WalkLimitKind; readonly at: string };
  /** true when onPart asked to stop. */
  readonly stopped: boolean;
  /** Archives whose directory could not be read: yielded as parts, not expanded. */
  readonly unreadableArchives: number;
  /** Ambiguities and undecodable content seen, in order (at most MAX_ANOMALIES). */
  readonly anomalies: readonly WalkAnomaly[];
}

export type OnPart = (part: WalkedPart) => Promise<void | 'stop'>;
