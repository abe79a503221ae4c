import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { pathValue } from './paths.js';
import { networks } from './networks.js';
import { bool, hostPort, int, list } from './primitives.js';
import { SCANNER_NAMES, scannersSchema } from './scanners.js';
import { relaySchema } from './relay.js';
import { milterSchema } from './milter.js';
import { helperSchema } from './helper.js';
import { adminSchema } from './admin.js';
import { quarantineSchema } from './quarantine.js';
import { stateSchema } from './state.js';

const action = z.enum(['deliver', 'reject', 'discard', 'quarantine', 'tempfail']);

const policySchema = z
  .object({
    malicious: action.prefault('reject'),
    suspicious: action.prefault('quarantine'),
    keepCopy: bool.default(true),
    partialClean: z.enum(['as-is', 'suspicious']).prefault('suspicious'),
    failure: z
      .object({
        timeout: action.prefault('tempfail'),
        unavailable: action.prefault('tempfail'),
        protocol: action.prefault('tempfail'),
        internal: action.prefault('tempfail'),
        encrypted: action.prefault('quarantine'),
        'too-large': action.prefault('quarantine'),
      })
      .strict()
      .prefault({}),
    tempfailWindow: duration.prefault('4h'),
    afterWindow: action.exclude(['tempfail']).prefault('quarantine'),
  })
  .strict();

export const configSchema = z
  .object({
    /** Where the state database, quarantine, spool and mark key live. */
    stateDir: pathValue().prefault('/var/lib/sandgate'),
    /** The shared state: SQLite in stateDir (default), or PostgreSQL for a cluster (state.url). */
    state: stateSchema.prefault({}),
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).prefault('info'),
        /** A file to log to. Unset: stdout for the relay and CLI; the helper requires a file (or logs nowhere). */
        file: pathValue().optional(),
      })
      .strict()
      .prefault({}),
    scan: z
      .object({
        /** Scanners in order, cheap first; the chain stops at the first malicious verdict. */
        chain: list(z.enum(SCANNER_NAMES))
          .pipe(z.array(z.enum(SCANNER_NAMES)).min(1))
          .default(['rules']),
        /** enforce: act on verdicts. monitor: deliver at once, scan in the background, log what would have happened. */
        mode: z.enum(['enforce', 'monitor']).prefault('enforce'),
        /** Deadline for one message when the front end has none of its own (the CLI). */
        deadline: duration.prefault('5m'),
        /** Messages scanned at once in one process; more wait in order. */
        concurrency: int.pipe(z.number().int().min(1).max(10_000)).default(32),
        maxMessageSize: byteSize.prefault('50M'),
        /** Messages up to this size are spooled in memory, larger ones to a file. */
        memorySpoolThreshold: byteSize.prefault('256k'),
      })
      .strict()
      .prefault({}),
    cache: z
      .object({
        clean: duration.prefault('24h'),
        suspicious: duration.prefault('1h'),
        malicious: duration.prefault('30d'),
        /** The in-flight lease of an identical scan across processes (renewed every third of it). */
        lease: duration.prefault('30s'),
      })
      .strict()
      .prefault({}),
    policy: policySchema.prefault({}),
    bypass: z
      .object({
        /** CIDR blocks or addresses whose mail skips scanning (visibly: header and counter). */
        clientNetworks: networks.default([]),
        senders: list(z.string()).default([]),
        recipientDomains: list(z.string()).default([]),
      })
      .strict()
      .prefault({}),
    headers: z
      .object({
        /** Add X-Sandgate-Verdict and X-Sandgate-Mark to delivered mail. */
        enabled: bool.default(true),
        /** The per-installation HMAC key for X-Sandgate-Mark. Default: <stateDir>/mark.key, created on first use. */
        markKeyFile: pathValue().optional(),
        /** A mark older than this is ignored (a replayed copy buys nothing). */
        markMaxAge: duration.prefault('30d'),
      })
      .strict()
      .prefault({}),
    quarantine: quarantineSchema.prefault({}),
    metrics: z
      .object({
        /** Prefix of every Prometheus metric name. */
        prefix: z
          .string()
          .regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/)
          .prefault('sandgate_'),
      })
      .strict()
      .prefault({}),
    scanners: scannersSchema.prefault({}),
    relay: relaySchema.prefault({}),
    milter: milterSchema.prefault({}),
    helper: helperSchema.prefault({}),
    admin: adminSchema.prefault({}),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export { hostPort };
