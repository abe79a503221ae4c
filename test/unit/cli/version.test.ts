import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../../../src/cli/main.js';
import { packageVersion } from '../../../src/cli/version.js';
import { memoryIo } from '../../integration/quarantine-harness.js';

const PACKAGE = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

describe('sandgate --version', () => {
  it('is the version in package.json, for the CLI and the helper alike', async () => {
    expect(packageVersion()).toBe(PACKAGE.version);
    const mem = memoryIo(process.cwd());
    expect(await main(['--version'], mem.io)).toBe(0);
    expect(mem.stdout().toString('utf8').trim()).toBe(PACKAGE.version);
  });
});
