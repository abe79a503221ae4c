import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import type { Scanner } from '../core/scanner.js';
import { RulesScanner } from '../sandbox/rules/rules-scanner.js';
import { createPtSandboxScanner } from './compose/pt-sandbox.js';
import { ClamdScanner } from '../sandbox/clamd/scanner.js';
import type { StatePorts } from '../core/ports.js';
import { createIcapScanner } from './compose/icap.js';
import { processOwner } from './owner.js';

export interface ScannerDeps {
  readonly config: Config;
  /** The allow list (rules), tasks and load rows (PT Sandbox). */
  readonly state: Pick<StatePorts, 'allowList' | 'ptTasks' | 'ptLoad'>;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Scratch directory for decoded parts and uploads. */
  readonly spoolDir: string;
  /** 'helper', 'relay', 'cli', ...: names this process in the PT Sandbox load rows. */
  readonly frontEnd?: string;
}

/** Builds the configured chain, in order. One case per scanner; an unknown name cannot pass the schema. */
export function buildScanners(deps: ScannerDeps): Scanner[] {
  const { config } = deps;
  return config.scan.chain.map((name): Scanner => {
    switch (name) {
      case 'rules':
        return new RulesScanner(config.scanners.rules, {
          spoolDir: join(deps.spoolDir, 'rules'),
          allowList: deps.state.allowList,
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
          tasks: deps.state.ptTasks,
          load: deps.state.ptLoad,
          owner: processOwner(),
          spoolDir: join(deps.spoolDir, 'pt-sandbox'),
          metrics: deps.metrics,
          ...(deps.frontEnd !== undefined ? { frontEnd: deps.frontEnd } : {}),
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
