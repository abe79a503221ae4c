import type { IcapConfig } from '../../config/icap.js';
import { isSandgateError, SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { Finding } from '../../core/outcome.js';
import type { ScanContext } from '../../core/scanner.js';
import { createIcapScanner } from '../compose/icap.js';
import type { IcapServer, OptionsResult } from '../../sandbox/icap/pool.js';
import { eicarProbe, sizeProbe } from '../../sandbox/icap/probe.js';
import { chooseMethod, type IcapObject, type IcapScanner } from '../../sandbox/icap/scanner.js';
import { CONFIG_OPTIONS, loadConfigFromArgs, parseCommandArgs } from '../args.js';
import { EXIT, writeLine, type CliIo } from '../io.js';
import { createLogger } from '../logger.js';

const HELP = `usage: sandgate icap health [--config FILE] [--set KEY=VALUE] [--no-size-probe] [--json]

Checks every ICAP server in scanners.icap.servers: its OPTIONS answer (methods, preview, ISTag,
Max-Connections, Options-TTL), then probes that must come back infected: the EICAR test file, and
a zip one byte below scanners.icap.maxObjectSize (the biggest object sandgate sends) with EICAR
as its last member (--no-size-probe skips it), so a service that skips objects as big as
sandgate sends is caught. A service answers OPTIONS
even when the engine behind it is down: only the probes show that it scans.
Exit 0 when every server passes, 2 with a line per problem saying what to fix.`;

interface ProbeReport {
  readonly result: string;
  readonly ms: number;
  readonly bytes: number;
}

interface ServerReport {
  server: string;
  ok: boolean;
  service?: string;
  methods?: string;
  method?: string;
  preview?: number | null;
  istag?: string | null;
  maxConnections?: number | null;
  optionsTtl?: number | null;
  allow204?: boolean;
  eicar?: ProbeReport;
  sizeProbe?: ProbeReport;
  problems: string[];
}

export async function run(argv: string[], io: CliIo): Promise<number> {
  let reports: ServerReport[] = [];
  const json = argv.includes('--json');
  try {
    const { values, positionals } = parseCommandArgs('icap', argv, {
      ...CONFIG_OPTIONS,
      'no-size-probe': { type: 'boolean' },
      json: { type: 'boolean' },
    });
    if (values.help || positionals.length === 0) {
      writeLine(values.help ? io.stdout : io.stderr, HELP);
      return values.help ? EXIT.ok : EXIT.error;
    }
    if (positionals[0] !== 'health' || positionals.length > 1) {
      throw new SandgateError(
        'ERR_CONFIG_INVALID',
        `sandgate icap: unknown subcommand "${positionals.join(' ')}" (try: health)`,
      );
    }
    const { config } = loadConfigFromArgs(values, io);
    const icap: IcapConfig = { ...config.scanners.icap, healthInterval: 0 };
    const log = createLogger(
      config,
      'stderr',
      config.log.file !== undefined ? {} : { stream: io.stderr },
    ) as unknown as Logger;
    const scanner = createIcapScanner(icap, { log });
    try {
      reports = [];
      for (const server of scanner.servers) {
        reports.push(await checkServer(scanner, server, icap, log, values['no-size-probe'] !== true));
      }
    } finally {
      await scanner.close();
    }
    print(io, reports, json);
    const failed = reports.filter((r) => !r.ok);
    for (const r of failed) {
      for (const p of r.problems) writeLine(io.stderr, `sandgate icap health: ${r.server}: ${p}`);
    }
    return failed.length === 0 ? EXIT.ok : EXIT.error;
  } catch (err) {
    if (reports.length > 0 && !json) print(io, reports, false);
    writeLine(
      io.stderr,
      `sandgate icap health: ${isSandgateError(err) ? `${err.message} [${err.code}]` : String(err)}`,
    );
    return EXIT.error;
  }
}

async function checkServer(
  scanner: IcapScanner,
  server: IcapServer,
  config: IcapConfig,
  log: Logger,
  withSizeProbe: boolean,
): Promise<ServerReport> {
  const report: ServerReport = { server: server.label, ok: false, problems: [] };
  const opt = await scanner.serverOptions(server);
  if (opt.kind !== 'ok') {
    report.problems.push(optionsAdvice(opt, server));
    return report;
  }
  const o = opt.options;
  Object.assign(report, {
    ...(o.service !== undefined ? { service: o.service } : {}),
    methods: o.methods.join(', '),
    preview: o.preview ?? null,
    istag: o.istag ?? null,
    maxConnections: o.maxConnections ?? null,
    optionsTtl: o.ttlSeconds ?? null,
    allow204: o.allow204,
  });
  const method = chooseMethod(config.method, o);
  if (method === undefined) {
    report.problems.push(
      `the service offers ${o.methods.join(', ') || 'no methods'}, not what scanners.icap.method (${config.method}) needs: set it to respmod or reqmod as the service allows`,
    );
    return report;
  }
  report.method = method;
  if (o.istag === undefined)
    report.problems.push(
      'OPTIONS carries no ISTag (RFC 3507 requires one): verdicts cannot be tied to an engine version',
    );

  report.eicar = await probe(scanner, server, eicarProbe(), config, log);
  const eicarOk = report.eicar.result.startsWith('infected');
  if (!eicarOk) report.problems.push(probeAdvice('eicar', report.eicar.result, config));
  if (withSizeProbe && eicarOk) {
    // The biggest object sandgate sends.
    const big = sizeProbe(config.maxObjectSize - 1);
    if (big !== undefined) {
      report.sizeProbe = await probe(scanner, server, big, config, log);
      if (!report.sizeProbe.result.startsWith('infected')) {
        report.problems.push(probeAdvice('size', report.sizeProbe.result, config));
      }
    }
  }
  report.ok = report.problems.length === 0;
  return report;
}

async function probe(
  scanner: IcapScanner,
  server: IcapServer,
  obj: IcapObject,
  config: IcapConfig,
  log: Logger,
): Promise<ProbeReport> {
  const t0 = Date.now();
  const ctx: ScanContext = {
    signal: AbortSignal.timeout(config.timeout + 1000),
    deadline: Date.now() + config.timeout,
    log,
    memo: { run: (_key, compute) => compute() },
    now: Date.now,
  };
  const f = await scanner.scanObject(obj, ctx, server);
  return { result: describe(f), ms: Date.now() - t0, bytes: obj.size };
}

function describe(f: Finding): string {
  switch (f.kind) {
    case 'malicious':
    case 'suspicious':
      return `infected: ${f.threats.join(', ')}${f.kind === 'suspicious' ? ' (suspicious)' : ''}`;
    case 'clean':
      return 'clean';
    case 'skipped':
      return `skipped(${f.reason})`;
    case 'failed':
      return `failed(${f.reason}): ${f.message}`;
  }
}

/** What to fix when OPTIONS did not work. */
export function optionsAdvice(r: Exclude<OptionsResult, { kind: 'ok' }>, server: IcapServer): string {
  const where = `${server.url.host}:${server.url.port}`;
  switch (r.kind) {
    case 'unreachable':
      if (r.tls === true) {
        return `the TLS handshake with ${where} failed (${r.code}): set scanners.icap.tls.caFile to the server's certificate or its CA (PEM), and use the host name the certificate names`;
      }
      return `cannot connect to ${where} (${r.code}): check the host and port in scanners.icap.servers, that the ICAP server runs, and that this host may connect (firewall)`;
    case 'timeout':
      return `${where} did not answer OPTIONS in time: check the address, or raise scanners.icap.timeout`;
    case 'aborted':
      return 'aborted';
    case 'failed':
      if (r.status === 404) {
        return `no ICAP service at ${server.url.path} (OPTIONS answered 404): check the service path in scanners.icap.servers (c-icap: /avscan; see docs/icap.md for other vendors)`;
      }
      return `the OPTIONS answer is not usable (${r.message}): is this an ICAP server, and the right port?`;
  }
}

/** What to fix when a probe did not come back infected. */
export function probeAdvice(which: 'eicar' | 'size', result: string, config: IcapConfig): string {
  if (which === 'size') {
    if (result === 'clean') {
      return `a zip of ${config.maxObjectSize - 1} bytes (just below scanners.icap.maxObjectSize) with EICAR as its last member came back clean: the service skips objects this big. Raise its limit (c-icap: use the avscan service, which has sizelimit=off, or raise virus_scan.MaxObjectSize; ClamAV: MaxFileSize and MaxScanSize) or lower scanners.icap.maxObjectSize`;
    }
    if (result.includes('part of the content')) {
      return `the size probe came back ${result}: c-icap streams data before its verdict (SendPercentData); use the avscan service (mode=simple) or set virus_scan.SendPercentData 0`;
    }
    return `the size probe of ${config.maxObjectSize - 1} bytes came back ${result}`;
  }
  if (result === 'clean') {
    return 'the EICAR test file came back clean: the service does not scan, or reports infections in a way sandgate does not read. c-icap: load virus_scan and an engine (clamd_mod), see docs/icap.md; Kaspersky Scan Engine: turn on SendInfectionFoundICAPHeader; other vendors: add their verdict header to scanners.icap.infectionHeaders';
  }
  if (result.startsWith('failed(unavailable)')) {
    return `the EICAR probe came back ${result}: the service is up but its engine is not (c-icap answers 500 when it cannot reach clamd: check clamd, and clamd_mod.ClamdSocket or ClamdHost/ClamdPort, and that clamd can read c-icap's TmpDir)`;
  }
  if (result.startsWith('failed(timeout)')) {
    return `the EICAR probe came back ${result}: the service did not answer in time; check its load or raise scanners.icap.timeout`;
  }
  return `the EICAR probe came back ${result}`;
}

function print(io: CliIo, reports: readonly ServerReport[], json: boolean): void {
  if (json) {
    writeLine(io.stdout, JSON.stringify(reports, null, 2));
    return;
  }
  const show = (v: string | number | boolean | null | undefined, none = '-'): string =>
    v === undefined || v === null ? none : String(v);
  for (const r of reports) {
    const rows: [string, string][] = [
      ['server', r.server],
      ['service', show(r.service)],
      [
        'methods',
        r.methods !== undefined ? `${r.methods}${r.method !== undefined ? ` (using ${r.method})` : ''}` : '-',
      ],
      ['preview', show(r.preview, 'none')],
      ['istag', show(r.istag)],
      ['max-conn', show(r.maxConnections, 'not limited')],
      ['options-ttl', r.optionsTtl === null ? 'none' : r.optionsTtl === undefined ? '-' : `${r.optionsTtl}s`],
      ['eicar', r.eicar !== undefined ? `${r.eicar.result} (${r.eicar.ms} ms)` : '-'],
      [
        'size-probe',
        r.sizeProbe !== undefined
          ? `${r.sizeProbe.result} at ${r.sizeProbe.bytes} bytes (${r.sizeProbe.ms} ms)`
          : '-',
      ],
      ['result', r.ok ? 'OK' : 'FAILED'],
    ];
    for (const [k, v] of rows) writeLine(io.stdout, `${k.padEnd(12)}${v}`);
    writeLine(io.stdout, '');
  }
}
