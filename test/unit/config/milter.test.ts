import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { milterSchema } from '../../../src/config/milter.js';
import { loadConfig } from '../../../src/cli/load-config.js';
import { resolveOwner } from '../../../src/milter/server.js';
import { isSandgateError } from '../../../src/core/errors.js';

describe('milter config', () => {
  it('reads Postfix, Sendmail and unix socket syntax', () => {
    const listen = (v: string) => milterSchema.parse({ listen: v }).listen;
    expect(listen('inet:127.0.0.1:10027')).toEqual({ kind: 'inet', host: '127.0.0.1', port: 10027 });
    expect(listen('inet:[::1]:10027')).toEqual({ kind: 'inet', host: '::1', port: 10027 });
    expect(listen('inet:10027@localhost')).toEqual({ kind: 'inet', host: 'localhost', port: 10027 });
    expect(listen('unix:/var/spool/postfix/sandgate/milter.sock')).toEqual({
      kind: 'unix',
      path: '/var/spool/postfix/sandgate/milter.sock',
    });
    expect(listen('local:/run/m.sock')).toEqual({ kind: 'unix', path: '/run/m.sock' });
    for (const bad of ['127.0.0.1:10027', 'unix:relative.sock', 'inet:host', 'inet:1.2.3.4:99999']) {
      expect(milterSchema.safeParse({ listen: bad }).success, bad).toBe(false);
    }
  });

  it('has the defaults docs/milter.md states', () => {
    const m = milterSchema.parse({});
    expect(m).toMatchObject({
      listen: { kind: 'inet', host: '127.0.0.1', port: 10027 },
      socketMode: 0o660,
      deadline: 60_000,
      maxConnections: 200,
      maxReceived: 50,
      shutdownTimeout: 30_000,
    });
  });

  it('reads a socket mode as octal, from YAML or the environment', () => {
    expect(milterSchema.parse({ socketMode: '0600' }).socketMode).toBe(0o600);
    expect(milterSchema.parse({ socketMode: 660 }).socketMode).toBe(0o660);
    expect(milterSchema.safeParse({ socketMode: '0999' }).success).toBe(false);
    const { config } = loadConfig({ env: { SANDGATE_MILTER__SOCKETMODE: '0640' }, cwd: '/' });
    expect(config.milter.socketMode).toBe(0o640);
  });

  it('names the key and the variable of a bad value', () => {
    let err: unknown;
    try {
      loadConfig({ env: { SANDGATE_MILTER__LISTEN: 'nowhere' }, cwd: '/' });
    } catch (e) {
      err = e;
    }
    expect(isSandgateError(err, 'ERR_CONFIG_INVALID')).toBe(true);
    expect((err as Error).message).toMatch(/milter\.listen/);
    expect((err as Error).message).toMatch(/SANDGATE_MILTER__LISTEN/);
  });
});

describe('resolveOwner', () => {
  it('reads user:group by name from passwd and group files, or by number', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sg-owner-'));
    const files = { passwd: join(dir, 'passwd'), group: join(dir, 'group') };
    writeFileSync(
      files.passwd,
      'root:x:0:0::/root:/bin/sh\nsandgate:x:998:998::/var/lib/sandgate:/usr/sbin/nologin\n',
    );
    writeFileSync(files.group, 'root:x:0:\npostfix:x:112:\n');
    expect(resolveOwner('sandgate:postfix', files)).toEqual({ uid: 998, gid: 112 });
    expect(resolveOwner(':postfix', files)).toEqual({ uid: -1, gid: 112 });
    expect(resolveOwner('sandgate', files)).toEqual({ uid: 998, gid: -1 });
    expect(resolveOwner('10:20', files)).toEqual({ uid: 10, gid: 20 });
    expect(() => resolveOwner('nobody-here', files)).toThrow(/no user "nobody-here"/);
  });
});
