import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { list } from './primitives.js';

/** clamd over TCP or a unix socket (INSTREAM). */
export const clamdSchema = z
  .object({
    /** One or more addresses: "127.0.0.1:3310" or "/run/clamav/clamd.ctl". */
    addresses: list(z.string().min(1)).default(['127.0.0.1:3310']),
    strategy: z.enum(['failover', 'round-robin']).prefault('failover'),
    /** Per call, and never past the message deadline. */
    timeout: duration.prefault('30s'),
    connectTimeout: duration.prefault('2s'),
    /** Must not exceed clamd's StreamMaxLength; bigger messages are failed(too-large) before sending. */
    streamMaxLength: byteSize.prefault('25M'),
    chunkSize: byteSize.prefault('64k'),
    granularity: z.enum(['message', 'parts']).prefault('message'),
    healthInterval: duration.prefault('10s'),
  })
  .strict();
