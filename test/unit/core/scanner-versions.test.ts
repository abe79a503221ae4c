import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { createMetrics } from '../../../src/core/metrics.js';
import type { Finding } from '../../../src/core/outcome.js';
import type { Scanner } from '../../../src/core/scanner.js';
import { ScannerVersions } from '../../../src/core/scanner-versions.js';
import { openStateDb } from '../../../src/store/db.js';
import { SqliteScannerVersionStore } from '../../../src/store/scanner-versions.js';
import { LogCapture } from '../../support/runtime.js';
import { tempDir } from '../../support/tmp.js';

/** A scanner whose version() answers as told, counting calls. */
class VersionedScanner implements Scanner {
  readonly name = 'versioned';
  readonly backgroundMs = 0;
  calls = 0;
  answer: () => Promise<string> = () => Promise.resolve('1.0');
  fingerprint(): Promise<string> {
    return Promise.resolve('fp');
  }
  version(): Promise<string> {
    this.calls++;
    return this.answer();
  }
  scan(): Promise<Finding> {
    return Promise.resolve({ kind: 'clean' });
  }
}

function store(dir = tempDir()) {
  const db = openStateDb(dir);
  onTestFinished(() => {
    db.close();
  });
  return { dir, store: new SqliteScannerVersionStore(db) };
}

function versions(s: SqliteScannerVersionStore, options: { now?: () => number; logs?: LogCapture } = {}) {
  const metrics = createMetrics({ defaultMetrics: false });
  const logs = options.logs ?? new LogCapture();
  return {
    metrics,
    logs,
    v: new ScannerVersions({
      store: s,
      metrics,
      log: logs.logger,
      ...(options.now ? { now: options.now } : {}),
      retryMs: 60_000,
      ttlMs: 600_000,
    }),
  };
}

describe('ScannerVersions', () => {
  it('200 concurrent asks make one lookup (single-flight), and all get the version', async () => {
    const scanner = new VersionedScanner();
    let resolve!: (v: string) => void;
    scanner.answer = () => new Promise((r) => (resolve = r));
    const { v } = versions(store().store);
    const asks = Array.from({ length: 200 }, () => v.current(scanner));
    // The stored version is read first (none here); then the one lookup starts.
    await vi.waitFor(() => expect(scanner.calls).toBe(1), { timeout: 2000, interval: 5 });
    resolve('5.11.0.12345');
    expect(new Set(await Promise.all(asks))).toEqual(new Set(['5.11.0.12345']));
    expect(scanner.calls).toBe(1);
  });

  it('a failed lookup keeps the last known version, is logged and counted, and is not retried at once', async () => {
    let now = 1_000_000;
    const scanner = new VersionedScanner();
    const { v, logs, metrics } = versions(store().store, { now: () => now });
    expect(await v.current(scanner)).toBe('1.0');
    scanner.answer = () => Promise.reject(new Error('HTTP 503'));
    now += 11 * 60_000; // past the TTL
    const answers = await Promise.all(Array.from({ length: 50 }, () => v.current(scanner)));
    await v.settle();
    expect(new Set(answers)).toEqual(new Set(['1.0']));
    expect(v.known('versioned')).toBe('1.0');
    expect(scanner.calls).toBe(2);
    expect(logs.events('scanner.version_failed')).toHaveLength(1);
    expect(logs.events('scanner.version_failed')[0]).toMatchObject({ scanner: 'versioned', known: '1.0' });
    expect(
      await metrics.registry.getSingleMetricAsString('sandgate_scanner_version_lookups_total'),
    ).toContain('result="failed"} 1');
    // Within the retry delay: no new lookup.
    now += 30_000;
    v.refresh(scanner);
    expect(scanner.calls).toBe(2);
    now += 31_000;
    scanner.answer = () => Promise.resolve('1.1');
    v.refresh(scanner);
    await v.settle();
    expect(scanner.calls).toBe(3);
    expect(v.known('versioned')).toBe('1.1');
    expect(logs.events('scanner.version_changed')[0]).toMatchObject({ from: '1.0', to: '1.1' });
    const info = await metrics.registry.getSingleMetricAsString('sandgate_scanner_version_info');
    expect(info).toContain('version="1.1"} 1');
    expect(info).not.toContain('version="1.0"');
  });

  it('another process (or a restart) starts with the stored version and does not look it up while fresh', async () => {
    const { dir, store: first } = store();
    const a = new VersionedScanner();
    const va = versions(first).v;
    expect(await va.current(a)).toBe('1.0');
    const { store: second } = store(dir);
    const b = new VersionedScanner();
    b.answer = () => Promise.reject(new Error('down'));
    const vb = versions(second).v;
    expect(await vb.current(b)).toBe('1.0');
    await vb.settle();
    expect(b.calls).toBe(0);
  });

  it('a stale stored version is looked up again; while that lookup fails or hangs, the stored one is used at once', async () => {
    const { dir, store: first } = store();
    await versions(first, { now: () => 0 }).v.current(new VersionedScanner());
    const { store: second } = store(dir);
    const hanging = new VersionedScanner();
    hanging.answer = () => new Promise(() => undefined);
    const { v } = versions(second, { now: () => 3_600_000 });
    const started = Date.now();
    expect(await v.current(hanging)).toBe('1.0');
    expect(Date.now() - started).toBeLessThan(100);
    expect(hanging.calls).toBe(1);
  });

  it('with no version known anywhere, waits for the first lookup only up to a short bound', async () => {
    const scanner = new VersionedScanner();
    scanner.answer = () => new Promise(() => undefined);
    const metrics = createMetrics({ defaultMetrics: false });
    const v = new ScannerVersions({
      store: store().store,
      metrics,
      log: new LogCapture().logger,
      firstWaitMs: 150,
    });
    const started = Date.now();
    expect(await v.current(scanner)).toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('a scanner without version() has none and is never asked', async () => {
    const { v } = versions(store().store);
    const plain: Scanner = {
      name: 'plain',
      backgroundMs: 0,
      fingerprint: () => Promise.resolve('x'),
      scan: () => Promise.resolve({ kind: 'clean' }),
    };
    expect(await v.current(plain)).toBeUndefined();
  });
});
