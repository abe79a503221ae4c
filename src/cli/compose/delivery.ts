import type { NextHop } from '../../config/delivery.js';
import type { Logger } from '../../core/logger.js';
import type { MailDelivery } from '../../core/ports.js';
import { connectorDelivery } from '../../smtp/mail-delivery.js';
import { createConnector, type NextHopConnector, type SmtpNextHopOptions } from '../../smtp/next-hop.js';
import { readConfiguredFile, readSecretFile } from '../config-files.js';

/** The SMTP/LMTP options of a delivery target as the configuration gives them (relay.nextHopOptions, quarantine.release). */
export interface SmtpTargetSettings {
  readonly tls: 'none' | 'opportunistic' | 'required';
  readonly caFile?: string | undefined;
  readonly servername?: string | undefined;
  readonly authUser?: string | undefined;
  readonly authPasswordFile?: string | undefined;
  readonly timeout: number;
}

/**
 * A connector for one delivery target, its CA and password files read here (the composition root
 * is the only place that reads files named in the configuration). `key` is the configuration path
 * of the settings, for error messages and the start-up log line. Opportunistic TLS without a CA
 * does not verify the target's certificate: that is said at start, once per target.
 */
export function buildConnector(
  hop: NextHop,
  settings: SmtpTargetSettings,
  o: { readonly hostname: string; readonly key: string; readonly log: Logger },
): NextHopConnector {
  const options: SmtpNextHopOptions = {
    name: o.hostname,
    timeout: settings.timeout,
    tls: settings.tls,
    ...(settings.caFile !== undefined ? { ca: readConfiguredFile(settings.caFile, `${o.key}.caFile`) } : {}),
    ...(settings.servername !== undefined ? { servername: settings.servername } : {}),
    ...(settings.authUser !== undefined && settings.authPasswordFile !== undefined
      ? {
          auth: {
            user: settings.authUser,
            pass: readSecretFile(settings.authPasswordFile, `${o.key}.authPasswordFile`),
          },
        }
      : {}),
  };
  const connector = createConnector(hop, options);
  if (
    (hop.kind === 'smtp' || hop.kind === 'lmtp') &&
    settings.tls === 'opportunistic' &&
    settings.caFile === undefined
  ) {
    o.log.info(
      { event: 'delivery.tls_unverified', target: connector.describe, key: o.key },
      'STARTTLS to this target is opportunistic: its certificate is not verified (set tls: required and caFile to verify)',
    );
  }
  return connector;
}

/** The delivery port for a target: the relay's own delivery code. */
export function buildDelivery(
  hop: NextHop,
  settings: SmtpTargetSettings,
  o: { readonly hostname: string; readonly key: string; readonly log: Logger },
): MailDelivery {
  return connectorDelivery(buildConnector(hop, settings, o));
}
