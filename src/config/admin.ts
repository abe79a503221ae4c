import { z } from 'zod';
import { pathValue } from './paths.js';
import { bool, hostPort } from './primitives.js';

/** The admin HTTP port: /healthz, /readyz, /metrics, and the quarantine API. Off unless enabled. */
export const adminSchema = z
  .object({
    enabled: bool.default(false),
    listen: hostPort.default({ host: '127.0.0.1', port: 10030 }),
    /** Bearer token for the quarantine API, from a file (never in this file). */
    tokenFile: pathValue().optional(),
    /**
     * First runs (config/first-run.yaml): when the token file (tokenFile, default
     * <stateDir>/admin.token) does not exist, create it with a random token, mode 0600.
     */
    createTokenFile: bool.default(false),
  })
  .strict();
