import { Readable } from 'node:stream';
import { lfHash } from '../../core/content-key.js';
import { headerFieldValue, mapHeaderBlock, type RawHeaderField } from '../../core/header-block.js';
import { readChunks, type MessageSource } from '../../core/message.js';

/**
 * Header fields kept in the normalised copy of a message with links (attachments granularity):
 * the ones a newsletter has the same for every recipient, and the top-level MIME fields the
 * sandbox needs to read the body. Everything else is left out: To, Cc, Bcc, Message-ID, Date,
 * Received and the other trace fields, DKIM and ARC signatures, authentication results,
 * List-Unsubscribe (its links are often per recipient), and any other (X-) field.
 */
export const NORMALISED_FIELDS: ReadonlySet<string> = new Set([
  'from',
  'sender',
  'reply-to',
  'subject',
  'list-id',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-disposition',
  'content-language',
]);

/** A message reduced to what is the same for every recipient of a newsletter. */
export interface NormalisedMessage {
  /** SHA-256 of the normalised bytes (line endings as LF): identical newsletters share it. */
  readonly key: string;
  /** Length of the bytes open() returns. */
  readonly size: number;
  /** The decoded-later Subject as it is in the header (latin1 text), if any. */
  readonly subject: string | undefined;
  /** A fresh stream of the normalised bytes (the header fields kept, then the body as it is). */
  open(): Readable;
}

function keptFields(fields: readonly RawHeaderField[]): Buffer {
  return Buffer.concat(fields.filter((f) => NORMALISED_FIELDS.has(f.name)).map((f) => f.raw));
}

/**
 * One pass over the message computes the key and size of its normalised copy; open() produces the
 * same bytes again from the message's spool (the header block is rewritten, the body streamed as
 * it is).
 */
export async function normaliseMessage(message: MessageSource): Promise<NormalisedMessage> {
  let subject: string | undefined;
  const { sha256, bytes } = await lfHash(
    mapHeaderBlock(readChunks(message), (fields) => {
      const s = fields.find((f) => f.name === 'subject');
      subject = s !== undefined ? headerFieldValue(s) : undefined;
      return keptFields(fields);
    }),
  );
  return {
    key: sha256,
    size: bytes,
    subject,
    open: () => Readable.from(mapHeaderBlock(message.open(), keptFields), { objectMode: false }),
  };
}
