import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { PartSpool } from '../../../src/mime/part-spool.js';
import { Spool } from '../../../src/mime/spool.js';
import {
  UNJUDGED_SPOOL_MAX_AGE_MS,
  liveSpoolFileCount,
  ownerAlive,
  ownerOf,
  ownerTag,
  hostTag,
  processStartTime,
  spoolFileName,
  sweepSpoolDir,
  tagOf,
} from '../../../src/mime/spool-owner.js';
import { ENVELOPE } from '../../support/runtime.js';
import { tempDir } from '../../support/tmp.js';

/** Above PID_MAX_LIMIT (2^22 on 64-bit Linux): never a running process. */
const DEAD_PID = 4_194_305;

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

/** A live process that is not this one, with its owner tag. */
async function foreignProcess(): Promise<{ pid: number; start: string }> {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(child);
  await new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const start = processStartTime(child.pid!);
  expect(start).toMatch(/^\d+$/);
  return { pid: child.pid!, start: start! };
}

describe('spool file owners', () => {
  it('names a file by its owner and reads the owner back', () => {
    const tag = ownerTag();
    expect(tag).toMatch(new RegExp(`^o${process.pid}s\\d+h[0-9a-f]{8}$`));
    expect(tag.endsWith(`h${hostTag()}`)).toBe(true);
    expect(processStartTime('self')).toBe(processStartTime(process.pid));
    const name = spoolFileName('sg-mbx1k2p3-5f2a9c0d1e', 'eml');
    expect(name).toBe(`sg-mbx1k2p3-5f2a9c0d1e.${tag}.eml`);
    expect(ownerOf(name)).toEqual({ pid: process.pid, start: processStartTime('self'), host: hostTag() });
    expect(ownerOf(`part-0123abcd.${tag}.bin`)).toEqual(ownerOf(name));
    expect(ownerOf('part-0123abcd.o42h0123abcd.bin')).toEqual({ pid: 42, host: '0123abcd' });
    for (const other of ['sg-mbx1k2p3-5f2a9c0d1e.eml', 'part-123-abcdef.bin', 'notes.txt', 'a.b.o1s2.eml']) {
      expect(ownerOf(other), other).toBeUndefined();
    }
  });

  it('tells a live owner from a gone one and from a reused pid', async () => {
    const foreign = await foreignProcess();
    expect(ownerAlive({ pid: process.pid, start: processStartTime('self')! })).toBe(true);
    expect(ownerAlive({ pid: process.pid, start: '1' })).toBe(false);
    expect(ownerAlive(foreign)).toBe(true);
    expect(ownerAlive({ pid: foreign.pid, start: `${foreign.start}7` })).toBe(false);
    // Without a start time in the name (no /proc where it was written): the pid alone decides.
    expect(ownerAlive({ pid: foreign.pid })).toBe(true);
    expect(ownerAlive({ pid: DEAD_PID, start: '1' })).toBe(false);
    expect(ownerAlive({ pid: DEAD_PID })).toBe(false);
  });

  it('sweeps the files of gone owners at any age, in every subdirectory, and keeps the rest', async () => {
    const foreign = await foreignProcess();
    const dir = tempDir();
    mkdirSync(join(dir, 'rules'));
    mkdirSync(join(dir, 'pt-sandbox', 'deeper'), { recursive: true });
    const now = Date.now();
    const files: Record<string, { name: string; keep: boolean; ageMs?: number }> = {
      foreignLive: { name: `sg-aaaaaa-0000000001.${tagOf(foreign)}.eml`, keep: true },
      ownLive: { name: `rules/part-00aa.${ownerTag()}.bin`, keep: true },
      dead: { name: `rules/part-01bb.${tagOf({ pid: DEAD_PID, start: '5' })}.bin`, keep: false },
      deadNoProc: { name: `part-02cc.o${DEAD_PID}h${hostTag()}.bin`, keep: false },
      reused: { name: `pt-sandbox/part-03dd.${tagOf({ pid: foreign.pid, start: '1' })}.bin`, keep: false },
      deepDead: { name: `pt-sandbox/deeper/sg-aaaaaa-0000000002.o${DEAD_PID}s9.eml`, keep: false },
      legacyYoung: { name: 'sg-aaaaaa-0000000003.eml', keep: true, ageMs: 60_000 },
      legacyOld: { name: 'sg-aaaaaa-0000000004.eml', keep: false, ageMs: UNJUDGED_SPOOL_MAX_AGE_MS + 60_000 },
      legacyPartYoung: { name: `rules/part-${DEAD_PID}-00ff.bin`, keep: true, ageMs: 60_000 },
      legacyPartOld: {
        name: `rules/part-${DEAD_PID}-01ff.bin`,
        keep: false,
        ageMs: UNJUDGED_SPOOL_MAX_AGE_MS + 1,
      },
      // Another host name (another container on the state volume): its pids are not ours to judge.
      otherHostDead: {
        name: `part-05ff.${tagOf({ pid: DEAD_PID, start: '5', host: hostTag('elsewhere') })}.bin`,
        keep: true,
      },
      otherHostOld: {
        name: `part-06ff.${tagOf({ pid: DEAD_PID, start: '5', host: hostTag('elsewhere') })}.bin`,
        keep: false,
        ageMs: UNJUDGED_SPOOL_MAX_AGE_MS + 1,
      },
      unknownOld: { name: 'README.txt', keep: true, ageMs: 30 * 86_400_000 },
    };
    for (const f of Object.values(files)) {
      const path = join(dir, f.name);
      writeFileSync(path, 'spooled bytes');
      if (f.ageMs !== undefined) utimesSync(path, (now - f.ageMs) / 1000, (now - f.ageMs) / 1000);
    }
    const result = sweepSpoolDir(dir, now);
    const left = Object.fromEntries(
      Object.entries(files).map(([k, f]) => [k, existsSync(join(dir, f.name))]),
    );
    expect(left).toEqual(Object.fromEntries(Object.entries(files).map(([k, f]) => [k, f.keep])));
    const gone = Object.values(files).filter((f) => !f.keep).length;
    expect(result).toEqual({
      removed: gone,
      removedBytes: gone * 13,
      kept: Object.keys(files).length - gone,
    });
    // A missing directory is nothing to sweep.
    expect(sweepSpoolDir(join(dir, 'nope'))).toEqual({ removed: 0, removedBytes: 0, kept: 0 });
  });

  it('removes a file of a live owner written before the last boot (pid and start time repeat after a reboot)', async () => {
    const foreign = await foreignProcess();
    const dir = tempDir();
    const path = join(dir, `part-04ee.${tagOf(foreign)}.bin`);
    writeFileSync(path, 'x');
    utimesSync(path, 86_400, 86_400); // 1970: before any boot
    sweepSpoolDir(dir);
    expect(existsSync(path)).toBe(false);
  });

  it('registers message and part spool files while they exist', async () => {
    const dir = tempDir();
    const before = liveSpoolFileCount();
    const spool = await Spool.fromStream(Readable.from(['m'.repeat(100)]), {
      msgId: 'sg-test-0000000009',
      envelope: ENVELOPE,
      dir,
      memoryThreshold: 10,
    });
    const part = new PartSpool(dir, 10);
    await part.write(Buffer.alloc(100));
    await part.end();
    expect(liveSpoolFileCount()).toBe(before + 2);
    spool.dispose();
    part.dispose();
    expect(liveSpoolFileCount()).toBe(before);
  });
});
