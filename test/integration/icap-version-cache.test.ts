import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { icapSchema } from '../../src/config/icap.js';
import { silentLogger } from '../../src/core/logger.js';
import { createMetrics } from '../../src/core/metrics.js';
import { DEFAULT_POLICY } from '../../src/core/policy.js';
import { ScanService } from '../../src/core/scan-service.js';
import { ScannerVersions } from '../../src/core/scanner-versions.js';
import { VerdictMemo } from '../../src/core/verdict-memo.js';
import { IcapScanner } from '../../src/sandbox/icap/scanner.js';
import { openStateDb, type StateDb } from '../../src/store/db.js';
import { SqliteScannerVersionStore } from '../../src/store/scanner-versions.js';
import {
  SqliteFirstFailureStore,
  SqliteInflightStore,
  SqliteVerdictStore,
} from '../../src/store/verdict-store.js';
import { FakeIcap } from '../fakes/fake-icap.js';
import { EICAR, eml, message } from '../unit/sandbox/clamd/helpers.js';

describe('the ICAP ISTag stored with the verdict, not in its cache key (through the scan service)', () => {
  let dir: string;
  let db: StateDb;
  let fake: FakeIcap;
  let scanner: IcapScanner;
  let now = Date.now();
  let versions: ScannerVersions;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sandgate-icap-cache-'));
    db = openStateDb(dir);
    // Options-TTL as c-icap sends it (3600 s there): the ISTag is asked again once it runs out.
    fake = await FakeIcap.start({ istag: 'DB-100', ttl: 60 });
  });

  afterEach(async () => {
    await scanner?.close();
    await fake.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function service(): ScanService {
    const metrics = createMetrics({ defaultMetrics: false });
    const clock = () => now;
    versions = new ScannerVersions({
      store: new SqliteScannerVersionStore(db),
      metrics,
      log: silentLogger,
      now: clock,
    });
    scanner = new IcapScanner({
      config: icapSchema.parse({ servers: [fake.url], healthInterval: 0, timeout: '5s' }),
      now: clock,
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
      quarantine: { put: () => Promise.resolve('q1') },
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

  it('a new ISTag does not empty the cache (bounded by cleanTtlCap); each verdict carries the ISTag that reached it', async () => {
    const svc = service();
    const msg = eml('an ordinary message');
    const first = await svc.evaluate(message(msg, 'a'), { deadline: now + 5000 });
    expect(first.decision.action).toBe('deliver');
    expect(first.outcomes[0]).toMatchObject({
      scanner: 'icap',
      kind: 'clean',
      cached: false,
      version: 'DB-100',
      details: { istag: 'DB-100' },
    });
    expect(fake.counts.RESPMOD).toBe(1);

    // New signatures at the service, and the version looked up again 11 minutes later (after the
    // Options-TTL): the cached verdict still applies and names the ISTag that reached it.
    fake.istag = 'DB-101';
    now += 11 * 60_000;
    versions.refresh(scanner);
    await versions.settle();
    expect(versions.known('icap')).toBe('DB-101');
    const again = await svc.evaluate(message(msg, 'b'), { deadline: now + 5000 });
    expect(again.outcomes[0]).toMatchObject({
      kind: 'clean',
      cached: true,
      version: 'DB-100',
      details: { istag: 'DB-100' },
    });
    expect(fake.counts.RESPMOD).toBe(1);

    // New content is judged under the new ISTag.
    const bad = await svc.evaluate(message(eml(`look: ${EICAR}`), 'c'), { deadline: now + 5000 });
    expect(bad.outcomes[0]).toMatchObject({
      kind: 'malicious',
      cached: false,
      threats: ['Eicar-Test-Signature'],
      version: 'DB-101',
      details: { istag: 'DB-101' },
    });

    // Past the ICAP scanner's cleanTtlCap (4 h) the clean verdict is not reused: sent again.
    now += 4 * 3_600_000 + 1;
    const late = await svc.evaluate(message(msg, 'd'), { deadline: now + 5000 });
    expect(late.outcomes[0]).toMatchObject({ kind: 'clean', cached: false, details: { istag: 'DB-101' } });
    expect(fake.counts.RESPMOD).toBe(3);
  });
});
