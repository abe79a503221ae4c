import { join } from 'node:path';
import type { Config } from '../../config/schema.js';
import type { StatePorts } from '../../core/ports.js';
import { openSqliteState } from '../../store/sqlite-state.js';

/** The quarantine directory: quarantine.dir, or <stateDir>/quarantine. */
export function quarantineDir(config: Config): string {
  return config.quarantine.dir ?? join(config.stateDir, 'quarantine');
}

/** The relay queue's directory: relay.queue.dir, or <stateDir>/queue. */
export function queueDir(config: Config): string {
  return config.relay.queue.dir ?? join(config.stateDir, 'queue');
}

/**
 * The state the configuration names, every port of it: SQLite in stateDir, with the quarantine and
 * the relay queue in their configured directories. The one place that picks a state backend.
 */
export function openState(config: Config, options: { readonly now?: () => number } = {}): StatePorts {
  return openSqliteState(config.stateDir, {
    quarantineDir: quarantineDir(config),
    queueDir: queueDir(config),
    ...(options.now !== undefined ? { now: options.now } : {}),
  });
}
