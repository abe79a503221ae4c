import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { bool, hostPort, list } from './primitives.js';

/** Where a released message (or an admin notice) goes. */
export type ReleaseTarget =
  | { readonly kind: 'smtp'; readonly host: string; readonly port: number }
  | { readonly kind: 'submitted'; readonly path: string };

/**
 * `smtp://host:port` or `host:port`: an SMTP listener (the relay's next hop, CommuniGate's SMTP
 * listener). `submitted:PATH`: CommuniGate's PIPE `Submitted` directory (a `.sub` file per message).
 */
export const releaseTarget = z.string().transform((value, ctx): ReleaseTarget => {
  const v = value.trim();
  const dir = /^submitted:(.+)$/.exec(v)?.[1];
  if (dir !== undefined) return { kind: 'submitted', path: dir };
  const hp = hostPort.safeParse(/^(?:smtp:\/\/)?(.+)$/.exec(v)?.[1] ?? '');
  if (!hp.success) {
    ctx.addIssue({
      code: 'custom',
      message: `not a release target: "${value}" (use smtp://host:port or submitted:/path/to/Submitted)`,
    });
    return z.NEVER;
  }
  return { kind: 'smtp', host: hp.data.host, port: hp.data.port };
});

/** The quarantine: where blocked mail is kept, how long, and where released mail goes. */
export const quarantineSchema = z
  .object({
    /** Default: <stateDir>/quarantine */
    dir: z.string().optional(),
    /** Items older than this are removed by the retention job. */
    maxAge: duration.prefault('30d'),
    /** When the stored items together pass this size, the oldest are removed first. */
    maxTotalSize: byteSize.prefault('10G'),
    /** How often the long-running commands (relay, helper, admin) run the retention job. */
    retentionInterval: duration.pipe(z.number().int().min(1000)).prefault('1h'),
    release: z
      .object({
        /** smtp://host:port (the relay's next hop, CommuniGate's SMTP listener) or submitted:PATH. Unset: release is refused. */
        target: releaseTarget.optional(),
        /** Our EHLO name towards the release target. */
        hostname: z.string().min(1).prefault('sandgate.localdomain'),
        /** Connect and per-command timeout towards the release target. */
        timeout: duration.prefault('30s'),
      })
      .strict()
      .prefault({}),
    /** A short notice to an administrator when something is quarantined. Never to senders. */
    notify: z
      .object({
        enabled: bool.default(false),
        /** Administrator addresses. */
        to: list(z.string().min(3)).default([]),
        from: z.string().min(1).prefault('sandgate@localhost'),
        /** Where notices go; default: release.target. */
        target: releaseTarget.optional(),
        /** Base URL of the admin page, for a link in the notice (e.g. http://127.0.0.1:10030). */
        adminUrl: z.string().url().optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type QuarantineConfig = z.output<typeof quarantineSchema>;
