import { z } from 'zod';
import { duration } from './durations.js';
import { int } from './primitives.js';
import { pathValue } from './paths.js';

/**
 * Where the shared state lives. Unset `url`: SQLite in stateDir (one host). A postgres:// URL: the
 * verdict cache, leases, PT Sandbox tasks, scanner versions, the allow list and the quarantine
 * (index and messages) live in PostgreSQL, shared by every node; the relay queue stays local.
 */
export const stateSchema = z
  .object({
    /** postgres://user@host:port/database. No password here: passwordFile or the environment. */
    url: z
      .string()
      .transform((value, ctx) => {
        let u: URL;
        try {
          u = new URL(value);
        } catch {
          ctx.addIssue({
            code: 'custom',
            message: 'not a URL (e.g. postgres://sandgate@db.example:5432/sandgate)',
          });
          return z.NEVER;
        }
        if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
          ctx.addIssue({
            code: 'custom',
            message: `only postgres:// URLs are supported, not ${u.protocol}//`,
          });
          return z.NEVER;
        }
        if (u.password !== '') {
          ctx.addIssue({
            code: 'custom',
            message: 'no password in the URL: use state.passwordFile or SANDGATE_STATE_PASSWORD / PGPASSWORD',
          });
          return z.NEVER;
        }
        const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
        if (u.hostname === '' || database === '' || u.username === '') {
          ctx.addIssue({
            code: 'custom',
            message: 'the URL needs a user, a host and a database: postgres://user@host:port/db',
          });
          return z.NEVER;
        }
        return {
          host: u.hostname.replace(/^\[|\]$/g, ''),
          port: u.port === '' ? 5432 : Number(u.port),
          user: decodeURIComponent(u.username),
          database,
          /** The URL as given (it holds no password), for logs and `sandgate state status`. */
          display: `postgres://${u.username}@${u.host}/${u.pathname.replace(/^\//, '')}`,
        };
      })
      .optional(),
    /** A file holding the database password (trimmed). Else SANDGATE_STATE_PASSWORD, else PGPASSWORD. */
    passwordFile: pathValue().optional(),
    /** disable: plain TCP (a socket on a trusted network). require: TLS, any certificate. verify-full: TLS, certificate and host name checked. */
    tls: z.enum(['disable', 'require', 'verify-full']).prefault('verify-full'),
    /** CA bundle (PEM) for verify-full; default: the system's CAs. */
    caFile: pathValue().optional(),
    /** The name to check the server certificate against; default: the URL's host. */
    servername: z.string().min(1).optional(),
    pool: z
      .object({
        /** Connections per process. */
        max: int.pipe(z.number().int().min(1).max(200)).default(10),
      })
      .strict()
      .prefault({}),
    /** A query (or the wait for a connection) that takes longer fails: the message is tempfailed, never held. */
    queryTimeout: duration.pipe(z.number().int().min(100)).prefault('5s'),
    /** Connecting to the server takes at most this. */
    connectTimeout: duration.pipe(z.number().int().min(100)).prefault('5s'),
  })
  .strict();

export type StateConfig = z.output<typeof stateSchema>;
