/**
 * The milter as packaged: the systemd unit, the Docker image's command and the compose service run
 * `sandgate milter` with settings the configuration accepts, and give it longer to stop than
 * milter.shutdownTimeout (verdicts in flight finish before SIGKILL).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../../src/cli/load-config.js';
import { parseDuration } from '../../../src/config/durations.js';

const root = join(import.meta.dirname, '..', '..', '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const defaults = loadConfig({ env: {}, cwd: root }).config;

describe('milter packaging', () => {
  it('the systemd unit runs `sandgate milter`, before Postfix, stopping after the shutdown timeout', () => {
    const unit = read('packaging/systemd/sandgate-milter.service');
    const value = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];
    expect(value('ExecStart')).toMatch(/\bsandgate milter --config \/etc\/sandgate\/sandgate\.yaml$/);
    // Debian runs Postfix as postfix@-.service, ordered before the postfix.service wrapper.
    expect(value('Before')?.split(/\s+/).sort()).toEqual(['postfix.service', 'postfix@-.service']);
    expect(value('KillSignal')).toBe('SIGTERM');
    expect(Number(value('TimeoutStopSec')) * 1000).toBeGreaterThan(defaults.milter.shutdownTimeout);
    // A unix socket and the network: nothing else is needed.
    expect(value('RestrictAddressFamilies')).toBe('AF_INET AF_INET6 AF_UNIX');
    const verify = spawnSync('systemd-analyze', ['verify', 'packaging/systemd/sandgate-milter.service'], {
      cwd: root,
      encoding: 'utf8',
    });
    // Where systemd-analyze exists, the unit has no syntax errors (a missing binary is not one).
    if (verify.error === undefined) {
      expect(
        verify.stderr.split('\n').filter((l) => l !== '' && !/Command .* is not executable/.test(l)),
      ).toEqual([]);
    }
  });

  it('the Docker image runs the milter with the command `milter` and exposes its port', () => {
    const d = read('Dockerfile');
    expect(d).toMatch(/^EXPOSE .*\b10027\b/m);
    expect(defaults.milter.listen).toEqual({ kind: 'inet', host: '127.0.0.1', port: 10027 });
  });

  it('the compose service runs `milter` with settings the configuration accepts', () => {
    const compose = parse(read('docker-compose.example.yml')) as {
      services: Record<
        string,
        { command?: string[]; environment?: Record<string, string>; stop_grace_period?: string }
      >;
    };
    const milter = compose.services['sandgate-milter'];
    const relay = compose.services.sandgate;
    expect(milter?.command).toEqual(['milter']);
    const config = loadConfig({ env: milter?.environment ?? {}, cwd: root }).config;
    expect(config.milter.listen).toEqual({ kind: 'inet', host: '127.0.0.1', port: 10027 });
    expect(config.admin.enabled).toBe(true);
    // Both on the host network: the admin ports must differ.
    expect(milter?.environment?.SANDGATE_ADMIN__LISTEN).not.toBe(relay?.environment?.SANDGATE_ADMIN__LISTEN);
    expect(parseDuration(milter?.stop_grace_period ?? '0s')).toBeGreaterThan(config.milter.shutdownTimeout);
  });
});
