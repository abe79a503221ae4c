/** The SQLite backend for the state contract suites (test/contract). */
import { onTestFinished } from 'vitest';
import type { StatePorts } from '../../../src/core/ports.js';
import { openSqliteState } from '../../../src/store/sqlite-state.js';
import type { BackendOptions, StateBackend } from '../../contract/backend.js';
import { tempDir } from '../../support/tmp.js';

export const sqliteBackend: StateBackend = {
  name: 'SQLite',
  open(options: BackendOptions = {}) {
    const dir = tempDir('sg-state-');
    const opened: StatePorts[] = [];
    onTestFinished(async () => {
      for (const s of opened.splice(0)) await s.close();
    });
    const connect = (o: BackendOptions): StatePorts => {
      const state = openSqliteState(dir, o.now !== undefined ? { now: o.now } : {});
      opened.push(state);
      return state;
    };
    const state = connect(options);
    return Promise.resolve({ state, another: (o = options) => Promise.resolve(connect(o)) });
  },
};
