import { z } from 'zod';
import { duration } from '../../config/durations.js';
import { describeError, isSandgateError, SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { PtSandboxConfig } from '../../config/pt-sandbox.js';
import { createPtClient } from '../compose/pt-sandbox.js';
import type { SandboxImage } from '../../sandbox/pt-sandbox/types.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';
import { watch } from './sandbox-watch.js';

const HELP = `usage: sandgate sandbox health [--config FILE] [--set KEY=VALUE] [--images] [--json]
       sandgate sandbox health --watch [--interval 2s] [--count N] [--json] [--config FILE]

Checks the PT Sandbox settings (scanners.ptSandbox) from the command line: the address and its
TLS certificate (maintenance/checkHealth), the version (maintenance/getVersion), and that the token
is accepted and has the permission the configured mode needs; --images also lists the
behavioural-analysis images (engines/sandbox/getImages) for analysis.sandbox.imageId.
Exit 0 when everything works, 2 with a line saying what to fix.

--watch shows the host's PT Sandbox load from the state database instead (every sandgate process
on it): tasks in flight, submissions waiting in sandgate, the in-flight windows, submitted and
finished per second, task age p50/p99 against the usual, refusals (429/503), the known version,
and whether the appliance or sandgate is the bottleneck. It refreshes every --interval (default
2s), --count times or until interrupted, and never calls the appliance.`;

/** A scan_id no appliance has: the poll answers 404 when the token may poll, 401/403 when not. */
const PROBE_SCAN_ID = '00000000-0000-4000-8000-000000000000';

interface Report {
  url: string;
  tls: 'verified' | 'not verified (insecureSkipVerify)' | 'none (http)';
  health?: string;
  version?: string;
  token?: string;
  images?: SandboxImage[];
}

export async function run(argv: string[], io: CliIo): Promise<number> {
  let report: Report | undefined;
  try {
    const { values, positionals } = parseCommandArgs('sandbox', argv, {
      ...CONFIG_OPTIONS,
      images: { type: 'boolean' },
      json: { type: 'boolean' },
      watch: { type: 'boolean' },
      interval: { type: 'string' },
      count: { type: 'string' },
    });
    if (values.help || positionals.length === 0) {
      writeLine(values.help ? io.stdout : io.stderr, HELP);
      return values.help ? EXIT.ok : EXIT.error;
    }
    if (positionals[0] !== 'health' || positionals.length > 1) {
      throw new SandgateError(
        'ERR_CONFIG_INVALID',
        `sandgate sandbox: unknown subcommand "${positionals.join(' ')}" (try: health)`,
      );
    }
    const { config } = loadConfigFromArgs(values, io);
    if (values.watch === true) {
      await watch(config, io, watchOptions(values));
      return EXIT.ok;
    }
    const pt = config.scanners.ptSandbox;
    const log = createLogger(
      config,
      'stderr',
      config.log.file !== undefined ? {} : { stream: io.stderr },
    ) as unknown as Logger;
    report = { url: pt.url ?? '(not set)', tls: tlsMode(pt) };
    const client = createPtClient(pt, { env: io.env, log });
    try {
      report.health = await step('address', pt, () => client.checkHealth());
      report.version = (await step('version', pt, () => client.getVersion())).version;
      report.token = await step('token', pt, () => probeToken(client, pt));
      if (values.images) report.images = await step('images', pt, () => client.getImages());
    } finally {
      await client.close();
    }
    print(io, report, values.json === true);
    return report.health === 'OK' ? EXIT.ok : EXIT.error;
  } catch (err) {
    if (report !== undefined && !argv.includes('--json')) print(io, report, false);
    writeLine(io.stderr, `sandgate sandbox health: ${describeError(err)}`);
    return EXIT.error;
  }
}

function watchOptions(values: { interval?: string; count?: string; json?: boolean }): {
  intervalMs: number;
  count: number | undefined;
  json: boolean;
} {
  const interval = duration.pipe(z.number().int().min(100)).safeParse(values.interval ?? '2s');
  if (!interval.success) {
    throw new SandgateError(
      'ERR_CONFIG_INVALID',
      `sandgate sandbox health: --interval ${values.interval ?? ''} is not a duration of at least 100ms (e.g. 2s)`,
    );
  }
  let count: number | undefined;
  if (values.count !== undefined) {
    count = Number(values.count);
    if (!/^\d+$/.test(values.count) || count < 1) {
      throw new SandgateError(
        'ERR_CONFIG_INVALID',
        `sandgate sandbox health: --count ${values.count} is not a positive whole number`,
      );
    }
  }
  return { intervalMs: interval.data, count, json: values.json === true };
}

function tlsMode(pt: PtSandboxConfig): Report['tls'] {
  if (pt.url?.startsWith('http:')) return 'none (http)';
  return pt.insecureSkipVerify ? 'not verified (insecureSkipVerify)' : 'verified';
}

async function probeToken(client: ReturnType<typeof createPtClient>, pt: PtSandboxConfig): Promise<string> {
  try {
    await client.taskStatus(pt.mode, PROBE_SCAN_ID, false);
  } catch (err) {
    if (isSandgateError(err) && err.details.status === 404) return `accepted for ${pt.mode} mode`;
    throw err;
  }
  return `accepted for ${pt.mode} mode`;
}

/** Runs one check; a failure becomes an error that says what to fix. */
async function step<T>(what: string, pt: PtSandboxConfig, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new SandgateError(
      isSandgateError(err) ? err.code : 'ERR_SCANNER_INTERNAL',
      `${what}: ${advice(err, pt)}`,
      { cause: err },
    );
  }
}

export function advice(err: unknown, pt: PtSandboxConfig): string {
  const url = pt.url ?? '(scanners.ptSandbox.url not set)';
  if (!isSandgateError(err)) return String(err);
  const d = err.details;
  if (d.status === 401) {
    return `the appliance refused the token (HTTP 401): check the token in ${pt.tokenFile !== undefined ? `the file ${pt.tokenFile}` : `the environment variable ${pt.tokenEnv}`}; create one in PT Sandbox under the API source's access tokens`;
  }
  if (d.status === 403) {
    const perm = pt.mode === 'source' ? '"check with source settings"' : '"scan with extended settings"';
    return `the token lacks a permission (HTTP 403): mode ${pt.mode} needs ${perm}; grant it to the token or change scanners.ptSandbox.mode`;
  }
  if (typeof d.tls === 'string') {
    if (d.tls === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      return `the certificate of ${url} does not name this host: use the host name the certificate was issued for in scanners.ptSandbox.url`;
    }
    return `the certificate of ${url} is not trusted (${d.tls}): set scanners.ptSandbox.caFile to the appliance's certificate or its CA (PEM)${pt.caFile !== undefined ? `; the current caFile ${pt.caFile} does not verify it` : ''}`;
  }
  if (typeof d.net === 'string') {
    return `cannot reach ${url} (${d.net}): check the address and port in scanners.ptSandbox.url and that this host may connect (firewall, DNS)`;
  }
  if (err.code === 'ERR_SCANNER_TIMEOUT')
    return `${url} did not answer in time: check the address, or raise scanners.ptSandbox.requestTimeout`;
  if (typeof d.status === 'number' && d.status >= 500)
    return `the appliance answered HTTP ${d.status}: it is up but not healthy; check it in the PT Sandbox UI`;
  if (d.status === 404) return `${url} answered 404: is this the PT Sandbox address (without /api/v1)?`;
  return err.message;
}

function print(io: CliIo, r: Report, json: boolean): void {
  if (json) {
    writeLine(io.stdout, JSON.stringify(r, null, 2));
    return;
  }
  const rows: [string, string][] = [
    ['address', r.url],
    ['tls', r.tls],
    ['health', r.health ?? '-'],
    ['version', r.version ?? '-'],
    ['token', r.token ?? '-'],
  ];
  for (const [k, v] of rows) writeLine(io.stdout, `${k.padEnd(9)}${v}`);
  if (r.images !== undefined) {
    writeLine(io.stdout, 'images:');
    for (const img of r.images) {
      const os = [img.os?.name, img.os?.version, img.os?.architecture]
        .filter((x) => x !== undefined)
        .join(' ');
      writeLine(io.stdout, `  ${img.image_id.padEnd(28)}${os}`);
    }
  }
}
