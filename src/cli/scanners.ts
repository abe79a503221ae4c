import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../core/config/schema.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { Scanner } from '../core/scanner.js';
import { RulesScanner } from '../sandbox/rules/rules-scanner.js';
import { createPtSandboxScanner } from '../sandbox/pt-sandbox/index.js';
import { ClamdScanner } from '../sandbox/clamd/scanner.js';
import { createIcapScanner } from '../sandbox/icap/index.js';
import { PtTaskStore } from '../store/pt-tasks.js';
import { SqliteAllowList } from '../quarantine/allow-list.js';
import type { StateDb } from '../store/db.js';

export interface ScannerDeps {
  readonly config: Config;
  readonly db: StateDb;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Scratch directory for decoded parts and uploads. */
  readonly spoolDir: string;
}

/** Builds the configured chain, in order. One case per scanner; an unknown name cannot pass the schema. */
export function buildScanners(deps: ScannerDeps): Scanner[] {
  const { config } = deps;
  return config.scan.chain.map((name): Scanner => {
    switch (name) {
      case 'rules':
        return new RulesScanner(config.scanners.rules, {
          spoolDir: join(deps.spoolDir, 'rules'),
          allowList: new SqliteAllowList(deps.db),
        });
      case 'clamd':
        return new ClamdScanner({
          config: config.scanners.clamd,
          log: deps.log,
          walk: {
            spoolDir: join(deps.spoolDir, 'clamd'),
            limits: config.scanners.rules.limits,
            memoryThreshold: config.scanners.rules.memorySpoolThreshold,
          },
        });
      case 'pt-sandbox':
        return createPtSandboxScanner(config.scanners.ptSandbox, {
          env: process.env,
          log: deps.log,
          tasks: new PtTaskStore(deps.db),
          owner: `${hostname()}:${process.pid}`,
          spoolDir: join(deps.spoolDir, 'pt-sandbox'),
        });
      case 'icap':
        return createIcapScanner(config.scanners.icap, {
          log: deps.log,
          walk: {
            spoolDir: join(deps.spoolDir, 'icap'),
            limits: config.scanners.rules.limits,
            memoryThreshold: config.scanners.rules.memorySpoolThreshold,
          },
        });
    }
  });
}
