import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { list } from './primitives.js';

/** Where one clamd listens: its TCPSocket/TCPAddr or its LocalSocket. */
export type ClamdAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** "127.0.0.1:3310", "[::1]:3310", "clamav.internal:3310", "/run/clamav/clamd.ctl" or "unix:/run/clamav/clamd.ctl". */
export const clamdAddress = z.string().transform((value, ctx): ClamdAddress => {
  const v = value.trim();
  if (v.startsWith('unix:') || v.startsWith('/')) {
    const path = v.startsWith('unix:') ? v.slice('unix:'.length) : v;
    if (path.startsWith('/')) return { kind: 'unix', path };
  } else {
    const m = /^(?:\[([^\]]+)\]|([^:[\]/\s]+)):(\d{1,5})$/.exec(v);
    const port = m ? Number(m[3]) : NaN;
    if (m && port >= 1 && port <= 65535) return { kind: 'tcp', host: (m[1] ?? m[2]) as string, port };
  }
  ctx.addIssue({
    code: 'custom',
    message: `not a clamd address: "${value}" (use host:port such as 127.0.0.1:3310, or an absolute unix socket path)`,
  });
  return z.NEVER;
});

/** Printable form of an address, for logs, details and the fingerprint. */
export function formatClamdAddress(a: ClamdAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** clamd over TCP or a unix socket (INSTREAM). docs/clamd.md explains every key. */
export const clamdSchema = z
  .object({
    /** One or more clamd instances: "127.0.0.1:3310" or "/run/clamav/clamd.ctl". */
    addresses: list(clamdAddress)
      .refine((a) => a.length > 0, 'at least one clamd address')
      .prefault(['127.0.0.1:3310']),
    /** failover: always the first healthy address in order. round-robin: spread calls over the healthy ones. */
    strategy: z.enum(['failover', 'round-robin']).prefault('failover'),
    /** Per call, and never past the message deadline. */
    timeout: duration.prefault('30s'),
    /** Connecting to one address (and a PING or VERSION health check) may take this long. */
    connectTimeout: duration.prefault('2s'),
    /** Must not exceed clamd's StreamMaxLength; bigger messages (or parts) are failed(too-large) before sending. */
    streamMaxLength: byteSize.prefault('25M'),
    /** Bytes per INSTREAM chunk. */
    chunkSize: byteSize
      .pipe(
        z
          .number()
          .int()
          .min(1024)
          .max(16 * 1024 * 1024),
      )
      .prefault('64k'),
    /** message: send the raw message (clamd decodes MIME itself). parts: send each decoded MIME part. */
    granularity: z.enum(['message', 'parts']).prefault('message'),
    /**
     * PING every address this often (a failed one is left out until it answers again) and refresh
     * the VERSION used in the cache fingerprint. 0: no background checks, VERSION asked per message.
     */
    healthInterval: duration.prefault('10s'),
    /** Cached clean verdicts of clamd live at most this long, even when VERSION has not changed. */
    cleanTtlCap: duration.prefault('4h'),
  })
  .strict();

export type ClamdConfig = z.output<typeof clamdSchema>;
