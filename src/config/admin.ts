import { z } from 'zod';
import { bool, hostPort } from './primitives.js';

/** The admin HTTP port: /healthz, /readyz, /metrics, and the quarantine API. Off unless enabled. */
export const adminSchema = z
  .object({
    enabled: bool.default(false),
    listen: hostPort.default({ host: '127.0.0.1', port: 10030 }),
    /** Bearer token for the quarantine API, from a file (never in this file). */
    tokenFile: z.string().optional(),
  })
  .strict();
