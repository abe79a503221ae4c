import { describe, expect, it } from 'vitest';
import { relaySchema } from '../../../src/config/relay.js';
import { NetworkList } from '../../../src/config/networks.js';

describe('relay config', () => {
  it('keeps the documented defaults', () => {
    const c = relaySchema.parse({});
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 10025 });
    expect(c.nextHop).toEqual({ kind: 'smtp', host: '127.0.0.1', port: 10026 });
    expect(c.deadline).toBeLessThan(600_000);
    expect(c.allowedClients).toEqual(['127.0.0.0/8', '::1/128']);
  });
  it('parses every next hop form', () => {
    const hop = (v: string) => relaySchema.parse({ nextHop: v }).nextHop;
    expect(hop('smtp://[::1]:25')).toEqual({ kind: 'smtp', host: '::1', port: 25 });
    expect(hop('lmtp://10.0.0.1:24')).toEqual({ kind: 'lmtp', host: '10.0.0.1', port: 24 });
    expect(hop('mx.local:2525')).toEqual({ kind: 'smtp', host: 'mx.local', port: 2525 });
    expect(hop('directory:out')).toEqual({ kind: 'directory', path: 'out' });
    expect(hop('./.sandgate/delivered')).toEqual({ kind: 'directory', path: './.sandgate/delivered' });
    expect(hop('submitted:/var/CommuniGate/Submitted')).toEqual({
      kind: 'submitted',
      path: '/var/CommuniGate/Submitted',
    });
    expect(() => hop('http://x:1')).toThrow(/not a delivery target/);
    expect(() => relaySchema.parse({ nextHopOptions: { tls: 'maybe' } })).toThrow();
    expect(() => relaySchema.parse({ typo: 1 })).toThrow();
  });
  it('reads env-style strings deliberately', () => {
    const c = relaySchema.parse({
      maxClients: '5',
      allowedClients: '10.0.0.0/8, 127.0.0.1',
      deadline: '90s',
      nextHopOptions: { xforward: 'false' },
    });
    expect(c.maxClients).toBe(5);
    expect(c.allowedClients).toEqual(['10.0.0.0/8', '127.0.0.1']);
    expect(c.deadline).toBe(90_000);
    expect(c.nextHopOptions.xforward).toBe(false);
  });
});

describe('NetworkList', () => {
  it('matches CIDR blocks and addresses, v4, v6 and v4-mapped', () => {
    const n = new NetworkList(['127.0.0.0/8', '::1/128', '192.0.2.7']);
    expect(n.has('127.1.2.3')).toBe(true);
    expect(n.has('::ffff:127.0.0.1')).toBe(true);
    expect(n.has('::1')).toBe(true);
    expect(n.has('192.0.2.7')).toBe(true);
    expect(n.has('192.0.2.8')).toBe(false);
    expect(n.has('10.0.0.1')).toBe(false);
    expect(n.has('garbage')).toBe(false);
    expect(() => new NetworkList(['not-an-ip'])).toThrow();
  });
});
