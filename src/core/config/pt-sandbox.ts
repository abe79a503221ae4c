import { z } from 'zod';
import { byteSize } from './durations.js';
import { bool, list } from './primitives.js';

/** PT Sandbox public API. The token comes from the environment or a file, never from this file. */
export const ptSandboxSchema = z
  .object({
    url: z.url().optional(),
    /** Name of the environment variable holding the API token. */
    tokenEnv: z.string().prefault('SANDGATE_PT_SANDBOX_TOKEN'),
    tokenFile: z.string().optional(),
    caFile: z.string().optional(),
    insecureSkipVerify: bool.default(false),
    mode: z.enum(['analysis', 'source']).prefault('analysis'),
    granularity: z.enum(['message', 'attachments']).prefault('message'),
    fileNameTemplate: z.string().prefault('{msgId}.eml'),
    maxUploadSize: byteSize.prefault('100M'),
  })
  .strict();
