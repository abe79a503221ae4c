import { describe, expect, it } from 'vitest';
import { isInsecureHttpUrl, ptSandboxSchema } from '../../../src/config/pt-sandbox.js';

describe('scanners.ptSandbox.url: plain http only to this machine', () => {
  it('counts 127.0.0.0/8, ::1 and localhost as this machine, in the forms the URL parser normalises', () => {
    for (const url of [
      'http://127.0.0.1:8080',
      'http://127.255.0.9',
      'http://127.1', // 127.0.0.1
      'http://0x7f000001/', // 127.0.0.1
      'http://localhost:8080/api',
      'http://LOCALHOST.',
      'http://[::1]:8080',
      'http://[0:0:0:0:0:0:0:1]/',
      'https://sandbox.example.net',
      'https://10.0.0.5',
    ]) {
      expect(isInsecureHttpUrl(url), url).toBe(false);
    }
    for (const url of [
      'http://sandbox.example.net',
      'http://10.0.0.5:8080',
      'http://128.0.0.1',
      'http://127.0.0.1.example.net',
      'http://localhost.example.net',
      'http://[::2]',
      'http://[::ffff:127.0.0.1]', // IPv4-mapped: not counted (the flag allows it)
      'HTTP://Sandbox.Example.Net',
    ]) {
      expect(isInsecureHttpUrl(url), url).toBe(true);
    }
  });

  it('refuses an insecure url at parse time with the path of the url key, unless allowInsecureHttp', () => {
    const refused = ptSandboxSchema.safeParse({ url: 'http://sandbox.example.net' });
    expect(refused.success).toBe(false);
    expect(refused.error?.issues.map((i) => i.path)).toEqual([['url']]);
    const allowed = ptSandboxSchema.parse({ url: 'http://sandbox.example.net', allowInsecureHttp: true });
    expect(allowed.allowInsecureHttp).toBe(true);
    expect(ptSandboxSchema.parse({}).allowInsecureHttp).toBe(false);
    expect(ptSandboxSchema.parse({ url: 'http://127.0.0.1:1' }).url).toBe('http://127.0.0.1:1');
  });
});
