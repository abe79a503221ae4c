/**
 * What a state backend gives the contract suites (test/contract/*.ts): a fresh, empty state per
 * test, and further connections to the same state (another process's view). The suites run
 * against SQLite in test/unit/store/*.test.ts; a PostgreSQL backend runs the same suites.
 */
import type { StatePorts } from '../../src/core/ports.js';

export interface BackendOptions {
  /** The clock of quarantine items and allow-list entries. */
  readonly now?: () => number;
}

export interface OpenedState {
  readonly state: StatePorts;
  /** Another connection to the same state, as another process would open it; closed with the test. */
  another(options?: BackendOptions): Promise<StatePorts>;
}

export interface StateBackend {
  readonly name: string;
  /** A fresh, empty state, closed (and removed) when the current test finishes. Call it inside a test. */
  open(options?: BackendOptions): Promise<OpenedState>;
}
