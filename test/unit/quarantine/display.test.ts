import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  bodyPreview,
  cleanText,
  formatLocalTime,
  readDisplayHeaders,
} from '../../../src/quarantine/display.js';
import { decodeHeaderText, decodeParameterisedText, searchFold } from '../../../src/mime/header-text.js';
import {
  ATTACHMENT_NAME,
  BODY_LINES,
  cyrillicMail,
  encodeSingleByte,
  FROM_ADDRESS,
  FROM_NAME,
  SUBJECT,
} from '../../support/cyrillic-mail.js';

const open = (bytes: Buffer) => () => Readable.from([bytes]);

describe('header text for display', () => {
  it('the specimen bytes are what ICU says they are', () => {
    const koi = encodeSingleByte('koi8-r', SUBJECT);
    expect(new TextDecoder('koi8-r').decode(koi)).toBe(SUBJECT);
    expect(koi.every((b) => b !== 0x3f)).toBe(true);
  });

  it('decodes a koi8-r Subject, a windows-1251 From name and an RFC 2231 koi8-r file name', async () => {
    const headers = await readDisplayHeaders(Readable.from([cyrillicMail()]));
    const byName = (n: string) => headers.find((h) => h.name === n);
    expect(byName('Subject')?.value).toBe(SUBJECT);
    expect(byName('Subject')?.raw).toMatch(/^=\?koi8-r\?B\?/);
    expect(byName('From')?.value).toBe(`${FROM_NAME} <${FROM_ADDRESS}>`);
    const name = encodeSingleByte('koi8-r', ATTACHMENT_NAME);
    const rfc2231 = `attachment; filename*=koi8-r''${[...name].map((b) => `%${b.toString(16)}`).join('')}`;
    expect(decodeParameterisedText(rfc2231)).toBe(`attachment; filename="${ATTACHMENT_NAME}"`);
  });

  it('joins adjacent encoded words, reads raw 8-bit UTF-8, and raw 8-bit in the declared charset', async () => {
    expect(decodeHeaderText('=?windows-1251?B?0ffl8g==?= =?windows-1251?B?IO3gIO7v6+Dy8w==?=')).toBe(
      'Счет на оплату',
    );
    expect(decodeHeaderText(Buffer.from('Счёт', 'utf8'))).toBe('Счёт');
    // A raw windows-1251 Subject (no encoded words), as some mailers still send it: read in the body's charset.
    const raw = Buffer.concat([
      Buffer.from('Subject: '),
      encodeSingleByte('windows-1251', 'Акт сверки'),
      Buffer.from('\r\nContent-Type: text/plain; charset=windows-1251\r\n\r\nbody\r\n'),
    ]);
    const headers = await readDisplayHeaders(Readable.from([raw]));
    expect(headers[0]).toMatchObject({ name: 'Subject', value: 'Акт сверки' });
  });

  it('removes terminal escapes and control characters from decoded values', async () => {
    const evil = `=?utf-8?B?${Buffer.from('Invoice \u001b[2J\u001b]0;owned\u0007\u0000ok').toString('base64')}?=`;
    const headers = await readDisplayHeaders(Readable.from([Buffer.from(`Subject: ${evil}\r\n\r\n`)]));
    expect(headers[0]?.value).toBe('Invoice ok');
  });

  it('folds case in every script and ё as е for searching', () => {
    expect(searchFold('СЧЁТ На Оплату')).toBe('счет на оплату');
    expect(searchFold(SUBJECT)).toContain(searchFold('счет'));
  });
});

describe('cleanText', () => {
  it('strips CSI, OSC, C1 and bidirectional overrides; keeps line breaks only when asked', () => {
    expect(cleanText('a\u001b[31mred\u001b[0m b')).toBe('ared b');
    expect(cleanText('x\u009b31my')).toBe('xy');
    expect(cleanText('title\u001b]0;pwned\u001b\\ end')).toBe('title end');
    expect(cleanText('invoice\u202efdp.exe')).toBe('invoicefdp.exe');
    expect(cleanText('a\r\nb\tc')).toBe('a b c');
    expect(cleanText('a\r\nb\u0007', { keepNewlines: true })).toBe('a\nb');
  });
});

describe('bodyPreview', () => {
  it('decodes a koi8-r text body and drops escapes; the attachment is read past', async () => {
    const mail = cyrillicMail({ bodyExtra: 'красный \u001b[31mтекст' });
    const p = await bodyPreview(open(mail), mail.length, { maxBytes: 1e6 });
    expect(p.problem).toBeUndefined();
    expect(p.text.split('\n')).toEqual([BODY_LINES[0], 'красный текст', ...BODY_LINES.slice(1)]);
    expect(p.truncated).toBe(false);
  });

  it('turns an HTML-only body into text, never markup', async () => {
    const html = Buffer.from(
      'Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><h1>Счёт</h1><script>alert(1)</script><p>Оплатите <a href="http://x.example/">здесь</a></p></body></html>\r\n',
    );
    const p = await bodyPreview(open(html), html.length, { maxBytes: 1e6 });
    expect(p.text).toContain('Оплатите');
    expect(p.text).not.toMatch(/<[a-z]/i);
    expect(p.text).not.toContain('alert(1)');
  });

  it('keeps the first lines and says when there is more', async () => {
    const text = Array.from({ length: 50 }, (_, i) => `line ${i}`).join('\r\n');
    const mail = Buffer.from(`Content-Type: text/plain\r\n\r\n${text}\r\n`);
    const p = await bodyPreview(open(mail), mail.length, { maxBytes: 1e6, lines: 5 });
    expect(p.text.split('\n')).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
    expect(p.truncated).toBe(true);
  });

  it('does not parse a message larger than the limit', async () => {
    let opened = false;
    const p = await bodyPreview(
      () => {
        opened = true;
        return Readable.from([Buffer.from('x')]);
      },
      5000,
      { maxBytes: 4000 },
    );
    expect(opened).toBe(false);
    expect(p.text).toBe('');
    expect(p.problem).toMatch(/larger than scan\.maxMessageSize/);
  });
});

describe('formatLocalTime', () => {
  it('says its zone: the offset makes it the same instant again', () => {
    const ms = Date.UTC(2026, 11, 4, 17, 39, 2);
    const shown = formatLocalTime(ms);
    expect(shown).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{2}:\d{2}$/);
    const [date, time, offset] = shown.split(' ');
    expect(Date.parse(`${date}T${time}${offset}`)).toBe(ms);
  });
});
