import { z } from 'zod';
import { configPaths, pathValue } from './paths.js';
import { hostPort } from './primitives.js';

/**
 * Where sandgate hands mail on: the relay's next hop, and the target of quarantine releases and
 * administrator notices. Every kind goes through the same delivery code (src/smtp/next-hop.ts).
 */
export type NextHop =
  | { readonly kind: 'smtp' | 'lmtp'; readonly host: string; readonly port: number }
  /** One `.eml` file per message, the envelope in its first two lines. */
  | { readonly kind: 'directory'; readonly path: string }
  /** CommuniGate Pro's PIPE `Submitted` directory: a `.sub` file per message (LF line ends). */
  | { readonly kind: 'submitted'; readonly path: string };

/**
 * `smtp://host:port`, `lmtp://host:port`, `host:port` (SMTP), `submitted:PATH`, or a directory
 * written as `directory:PATH`, an absolute path, or a path starting with `./` or `../`.
 */
export const nextHop = z
  .string()
  .transform((value, ctx): NextHop => {
    const v = value.trim();
    const submitted = /^submitted:(.+)$/.exec(v)?.[1];
    if (submitted !== undefined) return { kind: 'submitted', path: submitted };
    const dir = /^directory:(.+)$/.exec(v)?.[1] ?? (/^(\/|\.\.?\/)/.test(v) ? v : undefined);
    if (dir !== undefined) return { kind: 'directory', path: dir };
    const m = /^(?:(smtp|lmtp):\/\/)?(.+)$/.exec(v);
    const hp = hostPort.safeParse(m?.[2] ?? '');
    if (!m || !hp.success) {
      ctx.addIssue({
        code: 'custom',
        message: `not a delivery target: "${value}" (use smtp://host:port, lmtp://host:port, directory:PATH or submitted:PATH)`,
      });
      return z.NEVER;
    }
    return { kind: (m[1] ?? 'smtp') as 'smtp' | 'lmtp', host: hp.data.host, port: hp.data.port };
  })
  .register(configPaths, { kind: 'target' });

/** How sandgate speaks SMTP or LMTP to a target: the same keys for the next hop and for releases. */
export const smtpDeliveryOptions = {
  /** none: never STARTTLS. opportunistic: when offered, certificate not verified unless caFile is set. required: verified TLS or nothing. */
  tls: z.enum(['none', 'opportunistic', 'required']).prefault('opportunistic'),
  /** CA bundle that verifies the target's certificate (required mode verifies; opportunistic verifies only with this). */
  caFile: pathValue().optional(),
  /** Name checked against the target's certificate (default: its host). */
  servername: z.string().optional(),
  /** AUTH to the target; the password comes from a file, never from this file. */
  authUser: z.string().optional(),
  authPasswordFile: pathValue().optional(),
};
