/** The state contract suites (test/contract) against a real PostgreSQL server started for this file. */
import { afterAll, beforeAll } from 'vitest';
import { allowListContract } from '../../contract/allow-list.js';
import { clusterContract } from '../../contract/cluster.js';
import { firstFailureContract } from '../../contract/first-failure.js';
import { ptTasksContract } from '../../contract/pt-tasks.js';
import { quarantineContract } from '../../contract/quarantine.js';
import { scannerVersionsContract } from '../../contract/scanner-versions.js';
import { verdictCacheContract } from '../../contract/verdict-cache.js';
import { pgBackend } from '../../support/pg-backend.js';
import { startPostgres, type TestPostgres } from '../../support/postgres.js';

let server: TestPostgres | undefined;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.stop();
});

const backend = pgBackend(() => {
  if (server === undefined) throw new Error('PostgreSQL did not start');
  return server;
});

verdictCacheContract(backend);
firstFailureContract(backend);
scannerVersionsContract(backend);
ptTasksContract(backend);
allowListContract(backend);
quarantineContract(backend);
clusterContract(backend);
