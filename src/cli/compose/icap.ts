import type { IcapConfig } from '../../config/icap.js';
import type { Logger } from '../../core/logger.js';
import { IcapScanner, type IcapScannerOptions } from '../../sandbox/icap/scanner.js';
import { readConfiguredFile } from '../config-files.js';

/**
 * The ICAP scanner for the chain (src/cli/scanners.ts) and `sandgate icap health`: reads
 * tls.caFile, and warns when certificate verification is off for icaps:// servers.
 */
export function createIcapScanner(
  config: IcapConfig,
  deps: { readonly log: Logger; readonly walk?: IcapScannerOptions['walk'] },
): IcapScanner {
  const ca =
    config.tls.caFile !== undefined
      ? readConfiguredFile(config.tls.caFile, 'scanners.icap.tls.caFile')
      : undefined;
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
