import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCa {
  readonly dir: string;
  /** Paths of the CA certificate, and of a server key and certificate it signed. */
  readonly caFile: string;
  readonly keyFile: string;
  readonly certFile: string;
  readonly key: Buffer;
  readonly cert: Buffer;
  remove(): void;
}

/**
 * A throw-away CA (openssl) and one server certificate for `names` (the first is its CN) and the
 * IP addresses `ips`, valid two days: verified TLS between our processes and test peers on loopback.
 */
export function makeTestCa(
  names: readonly string[] = ['sink.test.local', 'relay.test.local'],
  ips: readonly string[] = [],
): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'sg-tls-'));
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  o([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=sandgate test CA',
  ]);
  o(['req', ...ec, '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', `/CN=${names[0] ?? 'localhost'}`]);
  const sans = [...ips.map((ip) => `IP:${ip}`), ...names.map((n) => `DNS:${n}`)];
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=${sans.join(',')}\n`);
  o([
    'x509',
    '-req',
    '-in',
    'srv.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'srv.crt',
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
  ]);
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    keyFile: join(dir, 'srv.key'),
    certFile: join(dir, 'srv.crt'),
    key: readFileSync(join(dir, 'srv.key')),
    cert: readFileSync(join(dir, 'srv.crt')),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
