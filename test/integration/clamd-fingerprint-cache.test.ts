import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clamdSchema } from '../../src/config/clamd.js';
import { silentLogger } from '../../src/core/logger.js';
import { createMetrics } from '../../src/core/metrics.js';
import { DEFAULT_POLICY } from '../../src/core/policy.js';
import { ScanService } from '../../src/core/scan-service.js';
import { VerdictMemo } from '../../src/core/verdict-memo.js';
import { ClamdScanner } from '../../src/sandbox/clamd/scanner.js';
import { openStateDb, type StateDb } from '../../src/store/db.js';
import {
  SqliteFirstFailureStore,
  SqliteInflightStore,
  SqliteVerdictStore,
} from '../../src/store/verdict-store.js';
import { FakeClamd } from '../fakes/fake-clamd.js';
import { eml, message } from '../unit/sandbox/clamd/helpers.js';

describe('clamd VERSION in the verdict cache key (through the scan service)', () => {
  let dir: string;
  let db: StateDb;
  let fake: FakeClamd;
  let scanner: ClamdScanner;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sandgate-clamd-cache-'));
    db = openStateDb(dir);
    fake = await FakeClamd.start({ version: 'ClamAV 1.4.6/27000/Thu Nov 26 08:00:00 2026' });
  });

  afterEach(async () => {
    await scanner?.close();
    await fake.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function service(): ScanService {
    const metrics = createMetrics({ defaultMetrics: false });
    scanner = new ClamdScanner({
      config: clamdSchema.parse({ addresses: [fake.address], healthInterval: 0 }),
    });
    return new ScanService({
      frontEnd: 'cli',
      scanners: [scanner],
      policy: DEFAULT_POLICY,
      memo: new VerdictMemo({
        verdicts: new SqliteVerdictStore(db),
        inflight: new SqliteInflightStore(db),
        ttl: { clean: 86_400_000, suspicious: 3_600_000, malicious: 86_400_000 },
        owner: 'test',
        metrics,
        log: silentLogger,
      }),
      firstFailures: new SqliteFirstFailureStore(db),
      quarantine: {
        put: () => Promise.reject(new Error('a clean message must not be quarantined')),
      },
      markKey: Buffer.alloc(32, 7),
      markMaxAgeMs: 86_400_000,
      headersEnabled: false,
      mode: 'enforce',
      concurrency: 4,
      metrics,
      log: silentLogger,
    });
  }

  it('reuses a clean verdict while VERSION is the same, scans again once it changes', async () => {
    const svc = service();
    const msg = eml('an ordinary message');
    const first = await svc.evaluate(message(msg, 'a'), { deadline: Date.now() + 5000 });
    expect(first.decision.action).toBe('deliver');
    expect(first.outcomes[0]).toMatchObject({ scanner: 'clamd', kind: 'clean', cached: false });
    expect(fake.counts.INSTREAM).toBe(1);

    const again = await svc.evaluate(message(msg, 'b'), { deadline: Date.now() + 5000 });
    expect(again.outcomes[0]).toMatchObject({ kind: 'clean', cached: true });
    expect(fake.counts.INSTREAM).toBe(1);

    // New signatures: the database version in VERSION moves on, the cached clean verdict no longer applies.
    fake.version = 'ClamAV 1.4.6/27001/Fri Nov 27 08:00:00 2026';
    fake.behavior = { kind: 'found', signature: 'Sandgate.New.Signature' };
    const after = await svc.evaluate(message(msg, 'c'), { deadline: Date.now() + 5000 });
    expect(after.outcomes[0]).toMatchObject({
      kind: 'malicious',
      cached: false,
      threats: ['Sandgate.New.Signature'],
    });
    expect(fake.counts.INSTREAM).toBe(2);
  });
});
