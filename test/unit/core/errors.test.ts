import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, SandgateError, isSandgateError } from '../../../src/core/errors.js';

const DOC = join(import.meta.dirname, '../../../docs/errors.md');

function documented(): Map<string, string> {
  const rows = new Map<string, string>();
  for (const line of readFileSync(DOC, 'utf8').split('\n')) {
    const m = /^\| `(ERR_[A-Z_]+)` \| ([^|]+) \|/.exec(line);
    if (m) rows.set(m[1] as string, (m[2] as string).trim());
  }
  return rows;
}

describe('error codes', () => {
  it('docs/errors.md lists exactly the codes in src/core/errors.ts, with the same meaning', () => {
    const doc = documented();
    expect([...doc.keys()].sort()).toEqual(Object.keys(ErrorCodes).sort());
    for (const [code, meaning] of Object.entries(ErrorCodes)) expect(doc.get(code), code).toBe(meaning);
  });

  it('SandgateError carries code, cause and details and is recognised by code', () => {
    const cause = new Error('disk full');
    const err = new SandgateError('ERR_SPOOL_WRITE', 'cannot write', { cause, details: { dir: '/x' } });
    expect(err.code).toBe('ERR_SPOOL_WRITE');
    expect(err.cause).toBe(cause);
    expect(err.details).toEqual({ dir: '/x' });
    expect(isSandgateError(err, 'ERR_SPOOL_WRITE')).toBe(true);
    expect(isSandgateError(err, 'ERR_STATE_DB')).toBe(false);
    expect(isSandgateError(cause)).toBe(false);
  });
});
