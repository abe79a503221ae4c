import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { hostPort, int } from './primitives.js';

/** Where the milter listens: a TCP address or a unix-domain socket. */
export type MilterListen =
  | { readonly kind: 'inet'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/**
 * `inet:host:port` (Postfix's syntax, also `inet:[::1]:port`), `inet:port@host` (Sendmail's),
 * `unix:/path` or `local:/path`.
 */
export const milterListen = z.string().transform((value, ctx): MilterListen => {
  const v = value.trim();
  const unix = /^(?:unix|local):(.+)$/.exec(v)?.[1];
  if (unix !== undefined) {
    if (!unix.startsWith('/')) {
      ctx.addIssue({ code: 'custom', message: `a unix socket needs an absolute path: "${value}"` });
      return z.NEVER;
    }
    return { kind: 'unix', path: unix };
  }
  const sendmail = /^inet6?:(\d{1,5})@(.+)$/.exec(v);
  const inet = sendmail ? `${sendmail[2]}:${sendmail[1]}` : /^inet6?:(.+)$/.exec(v)?.[1];
  const hp = hostPort.safeParse(inet ?? '');
  if (inet === undefined || !hp.success) {
    ctx.addIssue({
      code: 'custom',
      message: `not a milter socket: "${value}" (use inet:127.0.0.1:10027, inet:10027@127.0.0.1 or unix:/path)`,
    });
    return z.NEVER;
  }
  return { kind: 'inet', host: hp.data.host, port: hp.data.port };
});

/** A file mode written in octal: "0660", "660" or "0o660". */
const fileMode = z.union([z.number().int(), z.string()]).transform((value, ctx) => {
  const m = typeof value === 'number' ? undefined : /^\s*(?:0o?)?([0-7]{3,4})\s*$/.exec(value);
  // A number from YAML is read as the octal digits it was written with (0660 in YAML is 660).
  const mode = typeof value === 'number' ? parseInt(String(value), 8) : m ? parseInt(m[1] as string, 8) : NaN;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    ctx.addIssue({ code: 'custom', message: `not a file mode: "${value}" (use e.g. "0660")` });
    return z.NEVER;
  }
  return mode;
});

/** The milter front end (`sandgate milter`) for Postfix's smtpd_milters. */
export const milterSchema = z
  .object({
    /**
     * inet:host:port or unix:/path. Debian's Postfix runs smtpd chrooted in /var/spool/postfix:
     * a unix socket must then live below it (unix:/var/spool/postfix/sandgate/milter.sock, named
     * in main.cf as unix:/sandgate/milter.sock).
     */
    listen: milterListen.default({ kind: 'inet', host: '127.0.0.1', port: 10027 }),
    /** Mode of a unix socket (octal). */
    socketMode: fileMode.prefault('0660'),
    /** Owner of a unix socket: "user:group", "user" or ":group" (names or numbers). Unset: ours. */
    socketOwner: z.string().min(1).optional(),
    /**
     * Budget for the verdict at end of message, from the moment the last body chunk arrived. The
     * binding limit is the sending client's patience after its final dot, not Postfix's
     * milter_content_timeout (300 s): docs/milter.md.
     */
    deadline: duration.pipe(z.number().int().min(100)).prefault('60s'),
    /** MTA connections at once (one per SMTP session); more get 421 at MAIL. */
    maxConnections: int.pipe(z.number().int().min(1).max(100_000)).default(200),
    /** Largest message accepted (refused at MAIL when SIZE= says more, else after the body). Default: scan.maxMessageSize. */
    maxMessageSize: byteSize.optional(),
    /** Messages with more Received: header fields than this are refused as looping (Postfix's own is not counted). */
    maxReceived: int.pipe(z.number().int().min(1).max(1000)).default(50),
    /** Text of the 550 5.7.1 reply for refused mail. {threats} and {msgId} are replaced. */
    rejectText: z.string().min(1).prefault('Message refused: {threats} ({msgId})'),
    /** On shutdown, messages in flight get this long to finish, then 451. */
    shutdownTimeout: duration.prefault('30s'),
  })
  .strict();

export type MilterConfig = z.output<typeof milterSchema>;
