import { z } from 'zod';
import { byteSize, duration } from './durations.js';
import { pathValue } from './paths.js';
import { bool, int, list } from './primitives.js';
import { EXECUTABLE_EXTENSIONS } from './extensions.js';

/** Attachment types worth a sandbox analysis when the prefilter is on (extensions, lower case, no dot). */
export const DEFAULT_RISKY_EXTENSIONS: readonly string[] = [
  // executables and scripts
  ...EXECUTABLE_EXTENSIONS,
  'psm1',
  'apk',
  'url',
  'chm',
  'svg',
  'html',
  'htm',
  // documents with active content
  'doc',
  'docx',
  'docm',
  'dot',
  'dotm',
  'xls',
  'xlsx',
  'xlsm',
  'xlsb',
  'xlt',
  'xltm',
  'xlam',
  'ppt',
  'pptx',
  'pptm',
  'ppsm',
  'potm',
  'rtf',
  'odt',
  'ods',
  'odp',
  'pdf',
  'one',
  // archives and disk images
  'zip',
  'rar',
  '7z',
  'gz',
  'tgz',
  'bz2',
  'xz',
  'tar',
  'cab',
  'arj',
  'lzh',
  'ace',
  // nested mail
  'eml',
  'msg',
];

/** Content types (prefix match, lower case) worth an analysis when the prefilter is on. */
export const DEFAULT_RISKY_CONTENT_TYPES: readonly string[] = [
  'application/',
  'message/rfc822',
  'text/html',
  'image/svg',
];

/** A decimal number from YAML, or from the environment as a string ("1.5"). */
const decimal = z.union([
  z.number(),
  z
    .string()
    .regex(/^\s*\d+(\.\d+)?\s*$/, 'not a number')
    .transform((s) => Number(s)),
]);

const seconds = (min: number, max: number) =>
  duration.pipe(
    z
      .number()
      .int()
      .min(min * 1000, `at least ${min}s`)
      .max(max * 1000, `at most ${max}s`),
  );

/**
 * Whether a URL names this machine: 127.0.0.0/8, ::1 or localhost (after the URL parser's
 * normalisation, so `http://127.1` and `http://[0:0:0:0:0:0:0:1]` count too).
 */
export function isLoopbackUrl(url: URL): boolean {
  const host = url.hostname.toLowerCase();
  return (
    host === 'localhost' ||
    host === 'localhost.' ||
    host === '[::1]' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

/**
 * A plain http:// address of another machine: the API token (X-API-Key) and the mail would cross
 * the network in clear. Refused unless scanners.ptSandbox.allowInsecureHttp is true.
 */
export function isInsecureHttpUrl(raw: string): boolean {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return false;
  }
  return url.protocol === 'http:' && !isLoopbackUrl(url);
}

/**
 * PT Sandbox public API (docs/pt-sandbox.md). The token comes from the environment or a file,
 * never from this file.
 */
export const ptSandboxSchema = z
  .object({
    /**
     * Base address of the appliance, e.g. https://sandbox.example.net (the /api/v1 prefix is
     * added). http:// only to this machine (127.0.0.0/8, ::1, localhost) unless allowInsecureHttp.
     */
    url: z.url().optional(),
    /** Allow an http:// url to another machine: the token and the mail travel in clear (warned at start). */
    allowInsecureHttp: bool.default(false),
    /** Name of the environment variable holding the API token. */
    tokenEnv: z.string().prefault('SANDGATE_PT_SANDBOX_TOKEN'),
    /** A file holding the API token (wins over tokenEnv when set). */
    tokenFile: pathValue().optional(),
    /** PEM file with the CA (or the self-signed certificate) of the appliance. */
    caFile: pathValue().optional(),
    /** Skip TLS verification (logs a warning at start). Prefer caFile. */
    insecureSkipVerify: bool.default(false),
    /** analysis: /analysis/* with our options; source: /scan/checkFile with the token's source settings. */
    mode: z.enum(['analysis', 'source']).prefault('analysis'),
    /** message: the whole .eml; attachments: each decoded attachment on its own (analysed once across messages). */
    granularity: z.enum(['message', 'attachments']).prefault('message'),
    /** In attachments mode, also submit the whole message when its bodies carry links. */
    linksAsMessage: bool.default(true),
    /** Name shown in the sandbox UI: {msgId}, {subject}, {filename} (attachments mode). */
    fileNameTemplate: z.string().min(1).prefault('{msgId}.eml'),
    /** Content bigger than this is failed(too-large) before uploading. */
    maxUploadSize: byteSize.prefault('100M'),
    /** Task priority 1 (low) to 4 (high). */
    priority: int.pipe(z.number().int().min(1).max(4)).default(3),
    /** Options of /analysis/createScanTask (ignored in source mode, where the source's settings apply). */
    analysis: z
      .object({
        /** Decomposition depth: 2 reaches mail -> attachment -> archive member. */
        depth: int.pipe(z.number().int().min(0).max(32)).default(3),
        passwordsForUnpack: list(z.string().min(1)).default([]),
        urlExtract: bool.default(true),
        /** Let the sandbox reuse its own earlier result for a known file. */
        cacheEnabled: bool.default(false),
        /** Behavioural analysis in a VM (slow: see docs/pt-sandbox.md). */
        sandbox: z
          .object({
            enabled: bool.default(false),
            /** Required when enabled; `sandgate sandbox health --images` lists them. */
            imageId: z.string().min(1).optional(),
            /** Seconds the sample runs, 10s..3600s. */
            duration: seconds(10, 3600).prefault('120s'),
          })
          .strict()
          .prefault({})
          .refine((s) => !s.enabled || s.imageId !== undefined, {
            message: 'imageId is required when behavioural analysis is enabled',
            path: ['imageId'],
          }),
      })
      .strict()
      .prefault({}),
    /** Ask for preflight (intermediate) results; a preflight DANGEROUS ends the wait early. */
    allowPreflight: bool.default(false),
    polling: z
      .object({
        /** Delay before the first checkTask: static analysis answers in hundreds of ms to a few s. */
        firstDelay: duration.prefault('500ms'),
        /** Each following wait is the previous one times growth (0.5 s, 0.75 s, 1.1 s, ...)... */
        growth: decimal.pipe(z.number().min(1).max(4)).default(1.5),
        /** ...up to interval. */
        interval: duration.prefault('5s'),
        /** After this long, poll every slowInterval instead. */
        slowAfter: duration.prefault('60s'),
        slowInterval: duration.prefault('15s'),
      })
      .strict()
      .prefault({}),
    /** Timeout of one HTTP request (never past the message's budget). */
    requestTimeout: duration.prefault('30s'),
    connectTimeout: duration.prefault('5s'),
    retries: z
      .object({
        /** Attempts per request on 5xx and connection errors (1 = no retry). */
        attempts: int.pipe(z.number().int().min(1).max(10)).default(3),
        /** Linear backoff step: 1s, 2s, ... */
        backoff: duration.prefault('1s'),
      })
      .strict()
      .prefault({}),
    /**
     * Tasks in flight at once from this process: an adaptive window (AIMD) between min and max,
     * starting at start; more wait in order. It halves when the appliance refuses submissions
     * (429/503) and shrinks when task ages grow, and grows again when answers are healthy
     * (docs/pt-sandbox.md, "Load and back-pressure").
     */
    inflight: z
      .object({
        /** The ceiling: size it to the appliance's capacity (docs/pt-sandbox.md). */
        max: int.pipe(z.number().int().min(1).max(10_000)).default(64),
        /** Where the window starts (it doubles per round of healthy answers up to max). */
        start: int.pipe(z.number().int().min(1).max(10_000)).default(32),
        /** The floor the window never shrinks below. */
        min: int.pipe(z.number().int().min(1).max(10_000)).default(2),
      })
      .strict()
      .prefault({})
      .refine((w) => w.min <= w.start && w.start <= w.max, {
        message: 'inflight needs min <= start <= max',
        path: ['start'],
      }),
    /** A task is polled in the background (and resumed after a restart) up to this age; then it is resubmitted. */
    maxTaskAge: duration.prefault('15m'),
    /**
     * How long a task outlives the process polling it: its owner renews the lease every third of it;
     * once it ran out (the process died), another process on the same state adopts the task and
     * polls it on (docs/cluster.md).
     */
    taskLease: duration.prefault('30s'),
    /** Upper bound on how long a clean sandbox verdict may be cached. */
    cleanTtlCap: duration.prefault('24h'),
    prefilter: z
      .object({
        /** Submit only messages with risky parts or links; others are skipped(prefilter), never clean. */
        enabled: bool.default(false),
        riskyExtensions: list(z.string().min(1)).default([...DEFAULT_RISKY_EXTENSIONS]),
        riskyContentTypes: list(z.string().min(1)).default([...DEFAULT_RISKY_CONTENT_TYPES]),
        /** A text or HTML body with an http(s) link counts as risky. */
        links: bool.default(true),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .refine((c) => c.url === undefined || c.allowInsecureHttp || !isInsecureHttpUrl(c.url), {
    message:
      'http:// to another machine sends the API token and the mail in clear; use https:// (with caFile for a self-signed certificate) or set scanners.ptSandbox.allowInsecureHttp: true',
    path: ['url'],
  });

export type PtSandboxConfig = z.output<typeof ptSandboxSchema>;
