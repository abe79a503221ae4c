import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clamdSchema } from '../../src/config/clamd.js';
import { silentLogger } from '../../src/core/logger.js';
import { createMetrics } from '../../src/core/metrics.js';
import { DEFAULT_POLICY } from '../../src/core/policy.js';
import { ScanService } from '../../src/core/scan-service.js';
import { ScannerVersions } from '../../src/core/scanner-versions.js';
import { VerdictMemo } from '../../src/core/verdict-memo.js';
import { ClamdScanner } from '../../src/sandbox/clamd/scanner.js';
import { openStateDb, type StateDb } from '../../src/store/db.js';
import { SqliteScannerVersionStore } from '../../src/store/scanner-versions.js';
import {
  SqliteFirstFailureStore,
  SqliteInflightStore,
  SqliteVerdictStore,
} from '../../src/store/verdict-store.js';
import { FakeClamd } from '../fakes/fake-clamd.js';
import { eml, message } from '../unit/sandbox/clamd/helpers.js';

describe('clamd VERSION stored with the verdict, not in its cache key (through the scan service)', () => {
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

  let now = Date.now();
  let versions: ScannerVersions;

  function service(): ScanService {
    const metrics = createMetrics({ defaultMetrics: false });
    const clock = () => now;
    versions = new ScannerVersions({
      store: new SqliteScannerVersionStore(db),
      metrics,
      log: silentLogger,
      now: clock,
    });
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
        now: clock,
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
      versions,
      metrics,
      log: silentLogger,
      now: clock,
    });
  }

  it('a new VERSION does not invalidate a cached verdict (bounded by cleanTtlCap); the version that judged is shown', async () => {
    const svc = service();
    const msg = eml('an ordinary message');
    const first = await svc.evaluate(message(msg, 'a'), { deadline: now + 5000 });
    expect(first.decision.action).toBe('deliver');
    expect(first.outcomes[0]).toMatchObject({
      scanner: 'clamd',
      kind: 'clean',
      cached: false,
      version: 'ClamAV 1.4.6/27000/Thu Nov 26 08:00:00 2026',
    });
    expect(fake.counts.INSTREAM).toBe(1);

    // New signatures, and the version looked up again (10 minutes later): the cached verdict still
    // applies, and names the version that reached it.
    fake.version = 'ClamAV 1.4.6/27001/Fri Nov 27 08:00:00 2026';
    fake.behavior = { kind: 'found', signature: 'Sandgate.New.Signature' };
    now += 11 * 60_000;
    versions.refresh(scanner);
    await versions.settle();
    expect(versions.known('clamd')).toContain('/27001/');
    const again = await svc.evaluate(message(msg, 'b'), { deadline: now + 5000 });
    expect(again.outcomes[0]).toMatchObject({
      kind: 'clean',
      cached: true,
      version: 'ClamAV 1.4.6/27000/Thu Nov 26 08:00:00 2026',
    });
    expect(fake.counts.INSTREAM).toBe(1);

    // New content is judged by the new version.
    const other = await svc.evaluate(message(eml('another message'), 'c'), { deadline: now + 5000 });
    expect(other.outcomes[0]).toMatchObject({
      kind: 'malicious',
      cached: false,
      version: 'ClamAV 1.4.6/27001/Fri Nov 27 08:00:00 2026',
    });

    // Past clamd's cleanTtlCap (4 h) the clean verdict is not trusted any more: scanned again.
    now += 4 * 3_600_000 + 1;
    const late = await svc.evaluate(message(msg, 'd'), { deadline: now + 5000 });
    expect(late.outcomes[0]).toMatchObject({
      kind: 'malicious',
      cached: false,
      threats: ['Sandgate.New.Signature'],
    });
    expect(fake.counts.INSTREAM).toBe(3);
  });
});
