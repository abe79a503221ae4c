import { readFileSync } from 'node:fs';
import type { IcapConfig } from '../../core/config/icap.js';
import { SandgateError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { IcapScanner, type IcapScannerOptions } from './scanner.js';

export { IcapScanner } from './scanner.js';

/**
 * The ICAP scanner for the chain (src/cli/scanners.ts) and `sandgate icap health`: reads
 * tls.caFile, and warns when certificate verification is off for icaps:// servers.
 */
export function createIcapScanner(
  config: IcapConfig,
  deps: { readonly log: Logger; readonly walk?: IcapScannerOptions['walk'] },
): IcapScanner {
  let ca: Buffer | undefined;
  if (config.tls.caFile !== undefined) {
    try {
      ca = readFileSync(config.tls.caFile);
    } catch (cause) {
      throw new SandgateError(
        'ERR_CONFIG_FILE',
        `cannot read scanners.icap.tls.caFile ${config.tls.caFile}`,
        {
          cause,
          details: { path: 'scanners.icap.tls.caFile', file: config.tls.caFile },
        },
      );
    }
  }
  const tlsServers = config.servers.filter((s) => s.tls).map((s) => s.label);
  if (config.tls.insecureSkipVerify && tlsServers.length > 0) {
    deps.log.warn(
      { event: 'icap.tls_insecure', servers: tlsServers.join(',') },
      'TLS verification of the ICAP servers is OFF (scanners.icap.tls.insecureSkipVerify): anyone on the path can read mail; set tls.caFile instead',
    );
  }
  return new IcapScanner({
    config,
    log: deps.log,
    ...(deps.walk !== undefined ? { walk: deps.walk } : {}),
    ...(ca !== undefined ? { ca } : {}),
  });
}
