import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { nextHop, smtpDeliveryOptions, type NextHop } from './delivery.js';
import { pathValue } from './paths.js';
import { bool, list } from './primitives.js';

/** Where a released message (or an administrator notice) goes: any next-hop kind. */
export type ReleaseTarget = NextHop;

/** The quarantine: where blocked mail is kept, how long, and where released mail goes. */
export const quarantineSchema = z
  .object({
    /** Default: <stateDir>/quarantine */
    dir: pathValue().optional(),
    /** Items older than this are removed by the retention job. */
    maxAge: duration.prefault('30d'),
    /** When the stored items together pass this size, the oldest are removed first. */
    maxTotalSize: byteSize.prefault('10G'),
    /** How often the long-running commands (relay, helper, admin) run the retention job. */
    retentionInterval: duration.pipe(z.number().int().min(1000)).prefault('1h'),
    release: z
      .object({
        /**
         * smtp://host:port or lmtp://host:port (the relay's next hop, CommuniGate's SMTP listener),
         * directory:PATH, or submitted:PATH (CommuniGate's Submitted directory). Unset: release is refused.
         */
        target: nextHop.optional(),
        /** Our EHLO name towards the release target. */
        hostname: z.string().min(1).prefault('sandgate.localdomain'),
        /** TLS and AUTH towards an SMTP or LMTP target, as for the relay's next hop (relay.nextHopOptions). */
        ...smtpDeliveryOptions,
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
        /** Where notices go (with release's TLS and AUTH options); default: release.target. */
        target: nextHop.optional(),
        /** Base URL of the admin page, for a link in the notice (e.g. http://127.0.0.1:10030). */
        adminUrl: z.string().url().optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type QuarantineConfig = z.output<typeof quarantineSchema>;
