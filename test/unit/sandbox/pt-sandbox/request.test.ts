import { describe, expect, it } from 'vitest';
import { ptSandboxSchema } from '../../../../src/config/pt-sandbox.js';
import { withoutNulls } from '../../../../src/sandbox/pt-sandbox/client.js';
import { renderFileName, subjectForFileName } from '../../../../src/sandbox/pt-sandbox/file-name.js';
import { buildTaskBody } from '../../../../src/sandbox/pt-sandbox/task-runner.js';
import { readToken } from '../../../../src/cli/compose/pt-token.js';

describe('withoutNulls / buildTaskBody', () => {
  it('drops null and undefined at every level', () => {
    expect(withoutNulls({ a: null, b: 1, c: { d: undefined, e: [1, null, { f: null }] } })).toEqual({
      b: 1,
      c: { e: [1, {}] },
    });
  });

  it('builds a body without nulls from the defaults', () => {
    const body = buildTaskBody(ptSandboxSchema.parse({}), 'sfm-files:///x', 'm.eml');
    expect(JSON.stringify(body)).not.toContain('null');
    expect(body).toEqual({
      file_uri: 'sfm-files:///x',
      file_name: 'm.eml',
      async_result: true,
      short_result: true,
      priority: 3,
      options: {
        analysis_depth: 3,
        cache_enabled: false,
        url_extract_enabled: true,
        sandbox: { enabled: false },
      },
    });
  });
});

describe('config', () => {
  it('behavioural analysis needs an image', () => {
    const r = ptSandboxSchema.safeParse({ analysis: { sandbox: { enabled: true } } });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['analysis', 'sandbox', 'imageId']);
  });

  it('parses env-style strings', () => {
    const c = ptSandboxSchema.parse({
      inflight: { max: '40', start: '4', min: '1' },
      polling: { growth: '1.25' },
      maxTaskAge: '20m',
      prefilter: { enabled: 'true', riskyExtensions: 'exe, docm' },
    });
    expect(c.inflight).toEqual({ max: 40, start: 4, min: 1 });
    expect(c.polling.growth).toBe(1.25);
    expect(c.maxTaskAge).toBe(1_200_000);
    expect(c.prefilter).toMatchObject({ enabled: true, riskyExtensions: ['exe', 'docm'] });
  });

  it('rejects unknown keys and out-of-range values', () => {
    expect(ptSandboxSchema.safeParse({ tokne: 'x' }).success).toBe(false);
    expect(ptSandboxSchema.safeParse({ priority: 5 }).success).toBe(false);
    expect(ptSandboxSchema.safeParse({ analysis: { sandbox: { duration: '5s' } } }).success).toBe(false);
    expect(ptSandboxSchema.safeParse({ polling: { growth: 'fast' } }).success).toBe(false);
    const window = ptSandboxSchema.safeParse({ inflight: { max: 8, start: 16 } });
    expect(window.success).toBe(false);
    expect(window.error?.issues[0]?.path).toEqual(['inflight', 'start']);
  });
});

describe('file names', () => {
  it('renders the template safely', () => {
    expect(renderFileName('{msgId}.eml', { msgId: 'sg-1' })).toBe('sg-1.eml');
    expect(renderFileName('{subject}.eml', { msgId: 'sg-1', subject: 'a/b\\c\r\nd' })).toBe('a b c d.eml');
    expect(renderFileName('{subject}.eml', { msgId: 'sg-1', subject: '' })).toBe('sg-1.eml');
    expect(renderFileName('{subject}.eml', { msgId: 'sg-1', subject: 'x'.repeat(500) })).toHaveLength(120);
    expect(
      renderFileName('{subject}.eml', { msgId: 'sg-1', subject: 'x'.repeat(500) }).endsWith('.eml'),
    ).toBe(true);
  });

  it('decodes the Subject with libmime: RFC 2047 words in their charsets, raw UTF-8', () => {
    expect(subjectForFileName('=?UTF-8?B?0KHRh9GR0YI=?= =?utf-8?Q?_=D0=BC=D0=B0=D1=80=D1=82?=')).toBe(
      'Счёт март',
    );
    expect(subjectForFileName('=?koi8-r?B?88/Tz9c=?=')).toBe('Сосов');
    // windows-1251, split into two words: joined without the space between them (RFC 2047, 6.2)
    expect(subjectForFileName('=?windows-1251?B?0ffl8g==?= =?windows-1251?B?IO3gIO7v6+Dy8w==?=')).toBe(
      'Счет на оплату',
    );
    // 8-bit UTF-8 as the header parser hands it over (its bytes as a latin1 string)
    expect(subjectForFileName(Buffer.from('Счёт', 'utf8').toString('latin1'))).toBe('Счёт');
    // An unknown charset never throws; the template then makes a safe one-line name of it.
    expect(
      renderFileName('{subject}.eml', { msgId: 'sg-1', subject: subjectForFileName('=?bogus?B?AAAA?= x') }),
    ).toBe('x.eml');
  });
});

describe('readToken', () => {
  it('reads the environment variable, trimmed; errors name the variable, not the value', () => {
    expect(readToken({ tokenEnv: 'T' }, { T: ' abc\n' })).toBe('abc');
    expect(() => readToken({ tokenEnv: 'T' }, {})).toThrow(/T/);
    try {
      readToken({ tokenEnv: 'T', tokenFile: '/nonexistent/token' }, { T: 'secret-in-env' });
    } catch (err) {
      expect((err as { code: string }).code).toBe('ERR_SECRET_FILE');
      expect(String((err as Error).message)).not.toContain('secret-in-env');
    }
  });
});
