import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/config/schema.js';
import { createLogger, redactSecrets } from '../../../src/cli/logger.js';

/** A logger writing into memory, as sandgate builds it; returns the parsed lines. */
function capture(): { log: ReturnType<typeof createLogger>; lines: () => Array<Record<string, unknown>> } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  const config = configSchema.parse({ stateDir: '/nonexistent', log: { level: 'debug' } });
  const log = createLogger(config, 'stdout', { stream });
  return {
    log,
    lines: () =>
      text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('logger redaction', () => {
  it('blanks secrets at the top level, nested, in arrays and in child bindings, in any case', () => {
    const { log, lines } = capture();
    log.child({ apiKey: 'k-binding', cid: 'c1' }).info(
      {
        event: 'test.secrets',
        token: 't-top',
        Password: 'p-top',
        target: { host: 'h', password: 'p-nested' },
        request: { headers: { authorization: 'Bearer b', 'x-api-key': 'x', accept: 'json' } },
        list: [{ token: 't-array' }, 'plain'],
        count: 3,
      },
      'message',
    );
    const [line] = lines();
    const text = JSON.stringify(line);
    for (const secret of ['k-binding', 't-top', 'p-top', 'p-nested', 'Bearer b', '"x"', 't-array']) {
      expect(text).not.toContain(secret);
    }
    expect(line).toMatchObject({
      event: 'test.secrets',
      cid: 'c1',
      apiKey: '[redacted]',
      token: '[redacted]',
      Password: '[redacted]',
      target: { host: 'h', password: '[redacted]' },
      request: { headers: { authorization: '[redacted]', 'x-api-key': '[redacted]', accept: 'json' } },
      list: [{ token: '[redacted]' }, 'plain'],
      count: 3,
      msg: 'message',
    });
  });

  it('leaves an object without secrets as it is (no copy) and never changes the caller’s object', () => {
    const clean = { event: 'relay.message', code: 250, outcomes: ['rules:clean'], nested: { ms: 3 } };
    expect(redactSecrets(clean)).toBe(clean);
    const secret = { event: 'x', nested: { token: 'abc' } };
    const out = redactSecrets(secret);
    expect(out).toEqual({ event: 'x', nested: { token: '[redacted]' } });
    expect(secret.nested.token).toBe('abc');
  });

  it('does not look into class instances such as errors', () => {
    const err = Object.assign(new Error('boom'), { token: 'kept-on-the-error' });
    const wrapped = { err };
    expect(redactSecrets(wrapped)).toBe(wrapped);
  });
});
