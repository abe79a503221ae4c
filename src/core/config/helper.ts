import { z } from 'zod';
import { duration } from './durations.js';
import { int } from './primitives.js';

/** The CommuniGate Pro helper (`sandgate helper`). */
export const helperSchema = z
  .object({
    /** Highest Helper protocol version we answer to INTF. */
    maxProtocolVersion: int.pipe(z.number().int().min(1).max(99)).default(4),
    /** Budget per FILE request; keep it below the helper Time-out set in CommuniGate. */
    deadline: duration.prefault('50s'),
    /** Scans at once; further FILE requests wait in order. */
    concurrency: int.pipe(z.number().int().min(1)).default(64),
  })
  .strict();
