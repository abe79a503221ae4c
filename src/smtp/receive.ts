import { once } from 'node:events';
import { Transform, type Readable } from 'node:stream';
import type { Envelope } from '../core/message.js';
import { Spool } from '../mime/spool.js';
import { LineNormaliser } from '../core/line-endings.js';
import { HeaderWatcher } from '../core/header-block.js';

export interface ReceiveOptions {
  readonly msgId: string;
  readonly envelope: Envelope;
  readonly dir: string;
  readonly memoryThreshold: number;
  readonly maxBytes: number;
}

export interface ReceivedMessage {
  /**
   * The message with every line ending in CRLF, its header block parsed once (spool.header, which
   * the content key and the header rewrite use); its owner disposes it.
   */
  readonly spool: Spool;
  /** More than maxBytes arrived (the overflow was counted, not kept). */
  readonly sizeExceeded: boolean;
  /** Received: fields in the header block (the loop guard). */
  readonly hops: number;
}

/** smtp-server's DATA stream: a Readable with a live size flag. */
export type DataStream = Readable & { sizeExceeded?: boolean };

/**
 * Reads smtp-server's DATA stream once into a spool, with line endings normalised to CRLF (a
 * bare-LF "." can then not smuggle a second message to the next hop) and the Received fields of
 * the header block counted. Never destroys the client's stream: whatever fails on our side, the
 * stream is read to its end so smtp-server replies after the client's final dot (house rule 5.6).
 * Rejects when the client goes away before the final dot; nothing is left behind then.
 */
export async function receiveMessage(stream: DataStream, options: ReceiveOptions): Promise<ReceivedMessage> {
  const lines = new LineNormaliser(false);
  // The header block is parsed on its way to the spool, once: the loop guard counts its Received
  // fields, and the spool carries it for the content key and the header rewrite.
  const header = new HeaderWatcher();
  const normalised = new Transform({
    highWaterMark: 64 * 1024,
    transform(chunk: Buffer, _enc, done) {
      const out = lines.push(chunk);
      header.push(out);
      done(null, out);
    },
    flush(done) {
      const out = lines.end();
      header.push(out);
      done(null, out);
    },
  });

  // The one place the client's stream is piped by hand: a failure downstream must not destroy it.
  let ended = false;
  stream.once('end', () => {
    ended = true;
  });
  const onClientError = (err: Error) => normalised.destroy(err);
  const onClientClose = () => {
    if (!ended) normalised.destroy(new Error('the client closed the connection before the final dot'));
  };
  stream.on('error', onClientError);
  stream.once('close', onClientClose);
  stream.pipe(normalised);

  try {
    const spool = await Spool.fromStream(normalised, {
      msgId: options.msgId,
      envelope: options.envelope,
      dir: options.dir,
      memoryThreshold: options.memoryThreshold,
      maxBytes: options.maxBytes,
    });
    spool.header = header.end(spool.size);
    return { spool, sizeExceeded: spool.sizeExceeded || stream.sizeExceeded === true, hops: header.hops };
  } catch (err) {
    await drain(stream, normalised);
    throw err;
  } finally {
    stream.off('error', onClientError);
    stream.off('close', onClientClose);
  }
}

/** Reads the client's stream to its end without keeping anything (unless the client is already gone). */
async function drain(stream: DataStream, from: Transform): Promise<void> {
  stream.unpipe(from);
  if (stream.readableEnded || stream.destroyed) return;
  stream.resume();
  await Promise.race([once(stream, 'end'), once(stream, 'close')]).catch(() => undefined);
}
