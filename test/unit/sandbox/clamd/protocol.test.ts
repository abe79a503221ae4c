import { describe, expect, it } from 'vitest';
import {
  chunkHeader,
  encodeCommand,
  isPong,
  parseInstreamReply,
  parseVersion,
} from '../../../../src/sandbox/clamd/protocol.js';
import { clamdSchema } from '../../../../src/config/clamd.js';

describe('clamd protocol', () => {
  it('frames commands with the z prefix and a NUL', () => {
    expect(encodeCommand('INSTREAM').toString('latin1')).toBe('zINSTREAM\0');
    expect(encodeCommand('PING').toString('latin1')).toBe('zPING\0');
  });

  it('writes chunk lengths as 4-byte big-endian', () => {
    expect([...chunkHeader(0x01020304)]).toEqual([1, 2, 3, 4]);
    expect([...chunkHeader(65536)]).toEqual([0, 1, 0, 0]);
  });

  it.each([
    ['stream: OK', { kind: 'ok' }],
    ['stream: OK\0', { kind: 'ok' }],
    ['stream: Test.EICAR.NDB.UNOFFICIAL FOUND', { kind: 'found', signature: 'Test.EICAR.NDB.UNOFFICIAL' }],
    [
      'stream: Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68) FOUND',
      { kind: 'found', signature: 'Win.Test.EICAR_HDB-1' },
    ],
    [
      'INSTREAM size limit exceeded. ERROR',
      { kind: 'size-limit', text: 'INSTREAM size limit exceeded. ERROR' },
    ],
    ["stream: Can't allocate memory ERROR", { kind: 'error', text: "stream: Can't allocate memory ERROR" }],
    ['COMMAND READ TIMED OUT', { kind: 'garbage', text: 'COMMAND READ TIMED OUT' }],
    ['UNKNOWN COMMAND', { kind: 'garbage', text: 'UNKNOWN COMMAND' }],
    ['', { kind: 'garbage', text: '' }],
    ['stream: OK trailing', { kind: 'garbage', text: 'stream: OK trailing' }],
    ['stream:  FOUND', { kind: 'garbage', text: 'stream:  FOUND' }],
    ['stream: OK\nstream: Eicar FOUND', { kind: 'garbage', text: 'stream: OK stream: Eicar FOUND' }],
    ['\x01\x02garbage', { kind: 'garbage', text: '??garbage' }],
  ])('parses %j', (raw, expected) => {
    expect(parseInstreamReply(raw)).toEqual(expected);
  });

  it('never reads an error or garbage as clean or malicious', () => {
    for (const raw of [
      'stream: OK ERROR',
      'stream: Eicar FOUND ERROR',
      'OK',
      'FOUND',
      'stream: ok',
      'PONG',
    ]) {
      expect(['error', 'garbage', 'size-limit']).toContain(parseInstreamReply(raw).kind);
    }
  });

  it('accepts PONG and ClamAV VERSION answers only', () => {
    expect(isPong('PONG')).toBe(true);
    expect(isPong('PONG\0')).toBe(true);
    expect(isPong('PING')).toBe(false);
    expect(parseVersion('ClamAV 1.4.6')).toBe('ClamAV 1.4.6');
    expect(parseVersion('ClamAV 1.4.6/27450/Mon Nov 25 09:32:45 2024\0')).toBe(
      'ClamAV 1.4.6/27450/Mon Nov 25 09:32:45 2024',
    );
    expect(parseVersion('UNKNOWN COMMAND')).toBeUndefined();
    expect(parseVersion('ClamAV \x01')).toBeUndefined();
  });
});

describe('clamd config', () => {
  it('parses addresses from YAML lists and env strings', () => {
    const c = clamdSchema.parse({
      addresses: '127.0.0.1:3310, /run/clamav/clamd.ctl, unix:/tmp/c.sock, [::1]:3311',
    });
    expect(c.addresses).toEqual([
      { kind: 'tcp', host: '127.0.0.1', port: 3310 },
      { kind: 'unix', path: '/run/clamav/clamd.ctl' },
      { kind: 'unix', path: '/tmp/c.sock' },
      { kind: 'tcp', host: '::1', port: 3311 },
    ]);
    expect(clamdSchema.parse({}).addresses).toEqual([{ kind: 'tcp', host: '127.0.0.1', port: 3310 }]);
    expect(clamdSchema.parse({ streamMaxLength: '10M', timeout: '5s' })).toMatchObject({
      streamMaxLength: 10 * 1024 * 1024,
      timeout: 5000,
    });
  });

  it('names the path of a bad address and refuses unknown keys', () => {
    const bad = clamdSchema.safeParse({ addresses: ['127.0.0.1:3310', 'clamd'] });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.path).toEqual(['addresses', 1]);
    expect(clamdSchema.safeParse({ addresses: '' }).success).toBe(false);
    expect(clamdSchema.safeParse({ addresses: ['host:0'] }).success).toBe(false);
    expect(clamdSchema.safeParse({ adresses: ['127.0.0.1:3310'] }).success).toBe(false);
  });
});
