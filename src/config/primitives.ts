import { z } from 'zod';

/**
 * Scalars that may arrive as YAML values or as environment strings. Parsed deliberately:
 * "false" is false, "" is not 0, "abc" is an error naming the key.
 */
export const bool = z.union([z.boolean(), z.stringbool()]);

export const int = z.union([
  z.number().int(),
  z
    .string()
    .regex(/^\s*-?\d+\s*$/, 'not an integer')
    .transform((s) => Number(s)),
]);

export const port = int.pipe(z.number().int().min(0).max(65535));

/** A list, from YAML as a sequence or from the environment as a comma-separated string. */
export function list<T extends z.ZodType<unknown, string>>(item: T) {
  return z
    .union([
      z.array(z.string()),
      z.string().transform((s) =>
        s
          .split(',')
          .map((x) => x.trim())
          .filter((x) => x.length > 0),
      ),
    ])
    .pipe(z.array(item));
}

/** host:port, [v6]:port. Port 0 asks the OS for a free port (tests). */
export const hostPort = z.string().transform((value, ctx) => {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim());
  const p = m ? Number(m[3]) : NaN;
  if (!m || p > 65535) {
    ctx.addIssue({ code: 'custom', message: `not host:port: "${value}" (e.g. 127.0.0.1:10025)` });
    return z.NEVER;
  }
  return { host: (m[1] ?? m[2]) as string, port: p };
});
export type HostPort = z.output<typeof hostPort>;
