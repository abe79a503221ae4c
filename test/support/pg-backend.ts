/** The PostgreSQL backend for the state contract suites (test/contract), on a server the test file starts. */
import { onTestFinished } from 'vitest';
import { silentLogger } from '../../src/core/logger.js';
import type { StatePorts } from '../../src/core/ports.js';
import { openPostgresState, type PgConnection } from '../../src/store/pg-state.js';
import { openSqliteState } from '../../src/store/sqlite-state.js';
import type { BackendOptions, StateBackend } from '../contract/backend.js';
import { adminQuery, type TestPostgres } from './postgres.js';
import { tempDir } from './tmp.js';

let schemas = 0;

/** How to reach `server` (a schema of its own when given: each test gets an empty state). */
export function testConnection(
  server: TestPostgres,
  schema?: string,
  overrides: Partial<PgConnection> = {},
): PgConnection {
  return {
    host: server.host,
    port: server.port,
    user: server.user,
    database: server.database,
    ssl: false,
    display: `postgres://${server.user}@${server.host}:${server.port}/${server.database}`,
    poolMax: 5,
    queryTimeoutMs: 10_000,
    connectTimeoutMs: 5_000,
    ...(schema !== undefined ? { schema } : {}),
    ...overrides,
  };
}

/** A fresh schema on the server, for one test. */
export async function freshSchema(server: TestPostgres): Promise<string> {
  const schema = `t${process.pid}_${++schemas}`;
  await adminQuery(server, `CREATE SCHEMA ${schema}`);
  return schema;
}

export function pgBackend(server: () => TestPostgres): StateBackend {
  return {
    name: 'PostgreSQL',
    async open(options: BackendOptions = {}) {
      const s = server();
      const schema = await freshSchema(s);
      const dir = tempDir('sg-pgstate-');
      const opened: StatePorts[] = [];
      onTestFinished(async () => {
        for (const st of opened.splice(0)) await st.close();
      });
      const connect = async (o: BackendOptions): Promise<StatePorts> => {
        const state = await openPostgresState(testConnection(s, schema), {
          log: silentLogger,
          ...(o.now !== undefined ? { now: o.now } : {}),
          relayQueue: () => {
            const local = openSqliteState(dir);
            return { store: local.relayQueue, close: () => local.close() };
          },
        });
        opened.push(state);
        return state;
      };
      const state = await connect(options);
      return { state, another: (o = options) => connect(o) };
    },
  };
}
