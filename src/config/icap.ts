import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { bool, int, list } from './primitives.js';
import { pathValue } from './paths.js';

/** One ICAP service: where it listens and the service path in its request URI. */
export interface IcapServiceUrl {
  /** icaps:// : ICAP over TLS. */
  readonly tls: boolean;
  /** Host name or address as written (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** The service path with its query, from the leading slash: "/avscan", "/virus_scan?force=on". */
  readonly path: string;
  /** The request URI sent on the request line: icap://host:port/path. */
  readonly uri: string;
  /** Printable form for logs, details and the fingerprint (the same as uri, with icaps:// for TLS). */
  readonly label: string;
}

/** The port of ICAP (RFC 3507) and the one in use for ICAP over TLS (Squid's icaps://). */
export const ICAP_DEFAULT_PORT = 1344;
export const ICAPS_DEFAULT_PORT = 11344;

/** "icap://host[:port]/service[?args]" or "icaps://..." (TLS). The service path is required. */
export const icapServiceUrl = z.string().transform((value, ctx): IcapServiceUrl => {
  const v = value.trim();
  const m = /^(icaps?):\/\/(\[[0-9a-fA-F:.]+\]|[^:/?#[\]\s@]+)(?::(\d{1,5}))?(\/[^\s#]*)$/i.exec(v);
  const scheme = m?.[1]?.toLowerCase();
  const port =
    m?.[3] !== undefined ? Number(m[3]) : scheme === 'icaps' ? ICAPS_DEFAULT_PORT : ICAP_DEFAULT_PORT;
  const path = m?.[4] ?? '';
  if (m === null || port < 1 || port > 65535 || path.length < 2 || /[\0-\x20\x7f]/.test(path)) {
    ctx.addIssue({
      code: 'custom',
      message: `not an ICAP service URL: "${value}" (use icap://host[:port]/service, e.g. icap://127.0.0.1:1344/avscan; icaps:// for TLS)`,
    });
    return z.NEVER;
  }
  const rawHost = m[2] as string;
  const host = rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost;
  const hostPart = rawHost.startsWith('[') ? rawHost : host;
  const tls = scheme === 'icaps';
  // The request line always says icap://: the scheme of the protocol, whatever carries it.
  const uri = `icap://${hostPart}:${port}${path}`;
  return { tls, host, port, path, uri, label: `${tls ? 'icaps' : 'icap'}://${hostPart}:${port}${path}` };
});

/** HTTP header names as RFC 9110 allows them. */
const headerName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'not a header name')
  .transform((s) => s.toLowerCase());

/**
 * An ICAP antivirus or sandbox service (docs/icap.md explains every key). The defaults match
 * c-icap with its virus_scan service as Debian ships it: a 5M object limit.
 */
export const icapSchema = z
  .object({
    /** One or more ICAP services: icap://host[:port]/service (icaps:// for TLS). */
    servers: list(icapServiceUrl)
      .refine((a) => a.length > 0, 'at least one ICAP server')
      .prefault(['icap://127.0.0.1:1344/avscan']),
    /** failover: always the first healthy server in order. round-robin: spread calls over the healthy ones. */
    strategy: z.enum(['failover', 'round-robin']).prefault('failover'),
    /** auto: RESPMOD when the service lists it in Methods, else REQMOD. */
    method: z.enum(['auto', 'respmod', 'reqmod']).prefault('auto'),
    /** message: the raw message as one object. parts: each decoded MIME part on its own, with its name and type. */
    granularity: z.enum(['message', 'parts']).prefault('message'),
    /**
     * Content of this size or larger is failed(too-large) before anything is sent (the sense of
     * c-icap's virus_scan.MaxObjectSize, 5M in Debian). Keep it at or below what the service
     * scans: a service skips bigger objects and answers as if they were clean.
     */
    maxObjectSize: byteSize.prefault('5M'),
    /**
     * Send a preview when the service offers one (Preview in its OPTIONS answer). Off by default:
     * every object goes whole, so a service never answers from its first bytes alone.
     */
    preview: bool.default(false),
    /** Per call (OPTIONS, connection, answer), and never past the message deadline. */
    timeout: duration.prefault('60s'),
    /** Connecting to one server (and a health check's OPTIONS) may take this long. */
    connectTimeout: duration.prefault('2s'),
    /** Connections per server at most; a lower Max-Connections from the service wins. */
    maxConnections: int.pipe(z.number().int().min(1).max(1000)).default(16),
    /** An idle kept-alive connection is closed after this long. 0: a new connection per request. */
    keepAlive: duration.prefault('30s'),
    /**
     * Every server gets an OPTIONS request this often (a failed one is left out until it answers
     * again); its answer also refreshes Preview, Max-Connections and the ISTag. 0: no background
     * checks, OPTIONS only again when its Options-TTL runs out.
     */
    healthInterval: duration.prefault('30s'),
    /**
     * More response headers whose presence means "infected" (the value is the threat name), on top of
     * X-Infection-Found, X-Virus-ID, X-Violations-Found, X-Blocked, X-Blocked-Reason and
     * X-Response-Info: Blocked.
     */
    infectionHeaders: list(headerName).default([]),
    /** Cached clean verdicts of this scanner live at most this long. */
    cleanTtlCap: duration.prefault('4h'),
    tls: z
      .object({
        /** PEM file with the CA (or the self-signed certificate) of icaps:// servers; default: the system CAs. */
        caFile: pathValue().optional(),
        /** Skip certificate verification (logs a warning). Prefer caFile. */
        insecureSkipVerify: bool.default(false),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type IcapConfig = z.output<typeof icapSchema>;
