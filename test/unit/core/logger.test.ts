import { describe, expect, it } from 'vitest';
import { lazyChild } from '../../../src/core/logger.js';
import { recorder } from '../../support/recording-logger.js';

describe('lazyChild', () => {
  it('makes no child until a line is logged, and none for a level that is off', () => {
    const r = recorder('info');
    const log = lazyChild(r.root, { msgId: 'm1' });
    const inner = log.child({ scanner: 'rules' });
    inner.debug({ event: 'scan.scanner_done' });
    log.trace({ event: 'x' });
    expect(r.children()).toBe(0);
    expect(r.lines).toEqual([]);
  });

  it('logs with the same bindings as an eager child, making each child once', () => {
    const r = recorder('debug');
    const log = lazyChild(r.root, { msgId: 'm1' });
    const inner = log.child({ scanner: 'rules' });
    inner.debug({ event: 'a' }, 'first');
    inner.warn({ event: 'b' });
    log.info({ event: 'c' });
    expect(r.lines).toEqual([
      { level: 'debug', msgId: 'm1', scanner: 'rules', event: 'a', msg: 'first' },
      { level: 'warn', msgId: 'm1', scanner: 'rules', event: 'b', msg: undefined },
      { level: 'info', msgId: 'm1', event: 'c', msg: undefined },
    ]);
    expect(r.children()).toBe(2);
  });

  it('logs every level through a parent that cannot say which are on', () => {
    const r = recorder('debug');
    const { isLevelEnabled: _, ...plain } = r.root;
    const log = lazyChild(plain, { msgId: 'm2' });
    log.debug({ event: 'd' });
    expect(r.lines).toEqual([{ level: 'debug', msgId: 'm2', event: 'd', msg: undefined }]);
  });
});
