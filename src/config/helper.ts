import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { pathValue } from './paths.js';
import { bool, int } from './primitives.js';

/** The CommuniGate Pro helper (`sandgate helper`). */
export const helperSchema = z
  .object({
    /**
     * CommuniGate's base directory, against which FILE paths are resolved. Default: the helper's
     * working directory (CommuniGate starts helpers there).
     */
    baseDirectory: pathValue().optional(),
    /** Highest Helper protocol version we answer to INTF (we answer min(server's, this)). */
    maxProtocolVersion: int.pipe(z.number().int().min(1).max(99)).default(4),
    /**
     * Budget per FILE request, counted from the moment the line arrives; keep it below the helper
     * Time-out set in CommuniGate. When it runs out the answer is the tempfail reply (REJECTED).
     */
    deadline: duration.pipe(z.number().int().min(100)).prefault('50s'),
    /** Scans at once; further FILE requests wait in order (their deadline runs while they wait). */
    concurrency: int.pipe(z.number().int().min(1).max(100_000)).default(64),
    /**
     * Longest command line accepted from CommuniGate (bytes). A longer line that starts with a
     * sequence number is answered with the tempfail reply (line-too-long); others are logged and ignored.
     */
    maxLineLength: byteSize
      .pipe(
        z
          .number()
          .int()
          .min(64)
          .max(1024 * 1024),
      )
      .prefault('4k'),
    /** The answer for reject: DISCARD (silent, no backscatter to forged senders) or ERROR (CommuniGate bounces). */
    rejectWord: z.enum(['DISCARD', 'ERROR']).prefault('DISCARD'),
    /** Answer delivered mail with ADDHEADER "X-Sandgate-Verdict: ..." OK. Off: a bare OK (fail-open and bypassed mail still get the header). */
    addHeaders: bool.default(true),
    /** Texts sent with ERROR and REJECTED. {msgId}, {verdict}, {threats} and {reason} are replaced. */
    texts: z
      .object({
        /** The bounce text when rejectWord is ERROR. */
        reject: z.string().min(1).prefault('Message refused by sandgate: {verdict} ({threats}), id {msgId}'),
        /** The REJECTED text: CommuniGate keeps the message in its queue and tries again later. */
        tempfail: z.string().min(1).prefault('sandgate: not scanned yet ({reason}), will retry'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type HelperConfig = z.output<typeof helperSchema>;
