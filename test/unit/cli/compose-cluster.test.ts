/**
 * docker-compose.example.yml, profile `cluster`: two relay nodes on one PostgreSQL with a shared
 * clamd. Each node's environment goes through sandgate's own config loader on top of the config
 * the image bundles (config/first-run.yaml with /var/lib/sandgate paths, as the Dockerfile makes
 * it), so a renamed key, a misspelt override or a port that no longer matches its service fails
 * here instead of at `docker compose up`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig, objectShape } from '../../../src/cli/load-config.js';
import { parseDuration } from '../../../src/config/durations.js';
import { configSchema, type Config } from '../../../src/config/schema.js';
import { tempDir } from '../../support/tmp.js';

const root = join(import.meta.dirname, '..', '..', '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

interface Service {
  image?: string;
  profiles?: string[];
  command?: string[];
  network_mode?: string;
  environment?: Record<string, string>;
  secrets?: string[];
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition?: string }>;
  healthcheck?: { test?: string[] };
  stop_grace_period?: string;
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  secrets?: Record<string, { file?: string }>;
}

// Docker Compose applies YAML merge keys (`<<: *anchor`); so must the test.
const compose = parse(read('docker-compose.example.yml'), { merge: true }) as Compose;
const service = (name: string): Service => {
  const s = compose.services[name];
  if (s === undefined) throw new Error(`no service ${name} in docker-compose.example.yml`);
  return s;
};
const NODES = ['sandgate-a', 'sandgate-b'] as const;

/** The image's /etc/sandgate/sandgate.yaml, made as the Dockerfile's sed makes it. */
function bundledConfigFile(): string {
  const dockerfile = read('Dockerfile');
  expect(dockerfile).toContain(
    "sed -e 's#\\.\\./\\.sandgate#/var/lib/sandgate#g' config/first-run.yaml > /etc/sandgate/sandgate.yaml",
  );
  const file = join(tempDir(), 'sandgate.yaml');
  writeFileSync(file, read('config/first-run.yaml').replace(/\.\.\/\.sandgate/g, '/var/lib/sandgate'));
  return file;
}

/** A node's effective configuration in the container: bundled file, the image's ENV, the service's environment. */
function nodeConfig(name: string): Config {
  const env = { SANDGATE_STATEDIR: '/var/lib/sandgate', ...service(name).environment };
  return loadConfig({ file: bundledConfigFile(), env, cwd: '/app' }).config;
}

/** The in-container path of a compose secret. */
const secretPath = (name: string) => `/run/secrets/${name}`;

/** "127.0.0.1:5432:5432" -> { host, port } on the host side. */
function published(s: Service, containerPort: number): { host: string; port: number } {
  const spec = s.ports?.find((p) => p.endsWith(`:${containerPort}`));
  const m = /^([\d.]+):(\d+):(\d+)$/.exec(spec ?? '');
  if (!m) throw new Error(`port ${containerPort} is not published on a fixed address: ${String(spec)}`);
  return { host: m[1] as string, port: Number(m[2]) };
}

describe('docker-compose.example.yml, profile cluster', () => {
  it('every SANDGATE_ variable of a node names a configuration section (a misspelt one would be ignored)', () => {
    const sections = new Set(
      Object.keys(objectShape(configSchema) ?? {}).map((k) => k.replace(/[-_]/g, '').toLowerCase()),
    );
    for (const name of NODES) {
      const vars = Object.keys(service(name).environment ?? {});
      expect(vars.length).toBeGreaterThan(10);
      for (const v of vars) {
        expect(v).toMatch(/^SANDGATE_[A-Z]+(__[A-Z_]+)+$/);
        const section = v.slice('SANDGATE_'.length).split('__')[0]?.replace(/_/g, '').toLowerCase();
        expect(sections, v).toContain(section);
      }
    }
  });

  it('both nodes load through the config loader and share the database, key, token and clamd', () => {
    const db = service('sandgate-db');
    const clamd = service('sandgate-clamd');
    const dbPassword = db.environment?.POSTGRES_PASSWORD_FILE;
    const configs = NODES.map((name) => ({ name, s: service(name), config: nodeConfig(name) }));
    for (const { name, s, config } of configs) {
      // PostgreSQL: the URL names the database, user and published port of the db service.
      expect(config.state.url, name).toMatchObject({
        ...published(db, 5432),
        user: db.environment?.POSTGRES_USER,
        database: db.environment?.POSTGRES_DB,
      });
      // The password: the same secret file the db service was initialised from.
      expect(config.state.passwordFile).toBe(dbPassword);
      // Every secret a node reads is mounted into it.
      const mounted = (s.secrets ?? []).map(secretPath);
      expect(mounted).toContain(config.state.passwordFile);
      expect(mounted).toContain(config.headers.markKeyFile);
      expect(mounted).toContain(config.scanners.ptSandbox.tokenFile);
      for (const secret of s.secrets ?? []) expect(compose.secrets?.[secret]?.file, secret).toBeDefined();
      // The scanners: rules, the shared clamd (its published port), PT Sandbox.
      expect(config.scan.chain).toEqual(['rules', 'clamd', 'pt-sandbox']);
      expect(config.scanners.clamd.addresses).toEqual([{ kind: 'tcp', ...published(clamd, 3310) }]);
      expect(config.scanners.ptSandbox.url).toMatch(/^https:\/\//);
      // Clean and released mail go to the MTA on the node's own host, not to the bundled directory.
      expect(config.relay.nextHop).toMatchObject({ kind: 'smtp', host: '127.0.0.1', port: 10026 });
      expect(config.quarantine.release.target).toMatchObject({
        kind: 'smtp',
        host: '127.0.0.1',
        port: 10026,
      });
      // Per-node state on a volume of its own; the mark key is NOT the default <stateDir>/mark.key.
      expect(config.stateDir).toBe('/var/lib/sandgate');
      expect(s.volumes?.some((v) => v.endsWith(':/var/lib/sandgate'))).toBe(true);
      expect(config.admin.enabled).toBe(true);
      // Nodes start only once PostgreSQL and clamd answer.
      expect(s.depends_on?.['sandgate-db']?.condition).toBe('service_healthy');
      expect(s.depends_on?.['sandgate-clamd']?.condition).toBe('service_healthy');
      expect(s.profiles).toEqual(['cluster']);
      expect(parseDuration(s.stop_grace_period ?? '0s')).toBeGreaterThan(config.relay.shutdownTimeout);
    }
    const [a, b] = configs as [(typeof configs)[0], (typeof configs)[0]];
    // Shared: one key file, one token file, one database.
    expect(a.config.headers.markKeyFile).toBe(b.config.headers.markKeyFile);
    expect(a.config.scanners.ptSandbox.tokenFile).toBe(b.config.scanners.ptSandbox.tokenFile);
    expect(a.config.state.url).toEqual(b.config.state.url);
    // Not shared: the state volume, and on one host network the relay and admin ports.
    const stateVolume = (s: Service) => s.volumes?.find((v) => v.endsWith(':/var/lib/sandgate'));
    expect(stateVolume(a.s)).not.toBe(stateVolume(b.s));
    const ports = [a, b].flatMap(({ config }) => [config.relay.listen.port, config.admin.listen.port]);
    for (const other of ['sandgate', 'sandgate-milter']) {
      const env = service(other).environment ?? {};
      for (const v of [env.SANDGATE_RELAY__LISTEN, env.SANDGATE_ADMIN__LISTEN, env.SANDGATE_MILTER__LISTEN]) {
        if (v !== undefined) ports.push(Number(/:(\d+)$/.exec(v)?.[1]));
      }
    }
    ports.push(published(service('sandgate-db'), 5432).port, published(service('sandgate-clamd'), 3310).port);
    expect(new Set(ports).size).toBe(ports.length);
  });

  it('PostgreSQL keeps its data on a volume, takes its password from the secret and has a healthcheck', () => {
    const db = service('sandgate-db');
    expect(Number(/^postgres:(\d+)/.exec(db.image ?? '')?.[1])).toBeGreaterThanOrEqual(15);
    expect(db.environment?.POSTGRES_PASSWORD).toBeUndefined();
    expect((db.secrets ?? []).map(secretPath)).toContain(db.environment?.POSTGRES_PASSWORD_FILE);
    expect(db.volumes?.some((v) => v.endsWith(':/var/lib/postgresql/data'))).toBe(true);
    expect(db.healthcheck?.test).toContain('pg_isready');
    // clamd's health comes from its image's HEALTHCHECK; a service with none would never turn healthy.
    expect(service('sandgate-clamd').image).toMatch(/^clamav\/clamav:/);
    for (const name of ['sandgate-db', 'sandgate-clamd']) {
      // Published on loopback only: the nodes on the host network reach them there, nobody else.
      for (const p of service(name).ports ?? []) expect(p).toMatch(/^127\.0\.0\.1:/);
      expect(service(name).profiles).toEqual(['cluster']);
    }
  });

  it('the single-host services stay as they were: no profile, no secrets, SQLite', () => {
    const relay = service('sandgate');
    expect(relay.profiles).toBeUndefined();
    // A secret file that does not exist would stop `docker compose up` of the plain relay.
    expect(relay.secrets).toBeUndefined();
    expect(relay.environment?.SANDGATE_STATE__URL).toBeUndefined();
    expect(service('sandgate-milter').profiles).toEqual(['milter']);
    expect(service('sandgate-milter').secrets).toBeUndefined();
  });
});
