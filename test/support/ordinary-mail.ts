/**
 * A corpus of ordinary mail, as mail programs write it, for the false-positive check of the
 * hostile-input rules (docs/SECURITY.md): plain and HTML text, multipart/alternative, inline
 * images (cid: and data: URIs), Office and PDF attachments, a forwarded message, a bounce, a
 * calendar invitation, and Russian mail in koi8-r and windows-1251 as Outlook and The Bat! send
 * it. Most messages are built by nodemailer's composer (a real mail library); the legacy Russian
 * ones by hand, byte for byte.
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import { gzipSync } from 'node:zlib';
import { docx, oleDocClean, zip } from './specimens.js';

export interface CorpusMessage {
  readonly name: string;
  readonly bytes: Buffer;
}

/** A 1x1 PNG (a real one: signature, IHDR, IDAT, IEND). */
export const PNG_1X1 = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
);

/** A minimal but well-formed PDF. */
export const SMALL_PDF = Buffer.from(
  [
    '%PDF-1.4',
    '1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj',
    '2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj',
    '3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> endobj',
    'trailer << /Root 1 0 R >>',
    '%%EOF',
    '',
  ].join('\n'),
  'latin1',
);

/** An .xlsx: OOXML without macros. */
function xlsx(): Buffer {
  return zip({
    '[Content_Types].xml': Buffer.from('<?xml version="1.0"?><Types/>'),
    'xl/workbook.xml': Buffer.from('<workbook><sheets><sheet name="Q3"/></sheets></workbook>'),
    'xl/worksheets/sheet1.xml': Buffer.from(
      '<worksheet><sheetData><row><c><v>42</v></c></row></sheetData></worksheet>',
    ),
  });
}

/** Bytes of a text in a single-byte Cyrillic charset (built from the decoder's own table). */
export function encodeCharset(text: string, charset: 'koi8-r' | 'windows-1251'): Buffer {
  const decoder = new TextDecoder(charset);
  const table = new Map<string, number>();
  for (let b = 0; b < 256; b++) table.set(decoder.decode(Uint8Array.of(b)), b);
  return Buffer.from([...text].map((ch) => table.get(ch) ?? 0x3f));
}

function encodedWord(text: string, charset: 'koi8-r' | 'windows-1251'): string {
  return `=?${charset}?B?${encodeCharset(text, charset).toString('base64')}?=`;
}

async function compose(options: ConstructorParameters<typeof MailComposer>[0]): Promise<Buffer> {
  return new MailComposer({
    from: 'Anna Petrova <anna@example.org>',
    to: 'Boris <boris@example.net>',
    date: new Date('2024-03-05T09:30:00Z'),
    messageId: '<corpus@example.org>',
    ...options,
  })
    .compile()
    .build();
}

const PROSE =
  'Hello Boris,\n\nLet us begin 2025 planning on Monday; the agenda:\n' +
  '-- budget\n-- hiring\n--\nend of list.\n\nBest,\nAnna\n-- \nAnna Petrova, Finance\n';

export async function ordinaryCorpus(): Promise<CorpusMessage[]> {
  const html =
    '<html><body><p>Dear Boris,</p><p>The report is <a href="https://example.org/r/2024">online</a>.</p>' +
    '<p><img src="cid:logo@example.org" alt="logo"></p></body></html>';
  const forwarded = await compose({
    subject: 'Quarterly numbers',
    text: 'Numbers attached.',
    attachments: [{ filename: 'q3.xlsx', content: xlsx() }],
  });
  const messages: Array<[string, Promise<Buffer> | Buffer]> = [
    ['plain text with a signature', compose({ subject: 'Planning', text: PROSE })],
    [
      'plain text in UTF-8, Russian',
      compose({
        subject: 'Счёт на оплату',
        text: 'Добрый день!\n\nСчёт во вложении, оплатите до пятницы.\n\n--\nС уважением, Анна\n',
      }),
    ],
    [
      'HTML with a text alternative and links',
      compose({
        subject: 'Newsletter',
        text: 'See https://example.org/news',
        html: html.replace('cid:logo@example.org', 'https://example.org/logo.png'),
      }),
    ],
    [
      'HTML with an inline cid: image',
      compose({
        subject: 'With logo',
        html,
        text: 'Dear Boris, the report is online.',
        attachments: [{ filename: 'logo.png', content: PNG_1X1, cid: 'logo@example.org' }],
      }),
    ],
    [
      'HTML signature with a data: URI image',
      compose({
        subject: 'Signature',
        html: `<p>Thanks!</p><p><img src="data:image/png;base64,${PNG_1X1.toString('base64')}"></p>`,
      }),
    ],
    [
      'Office attachments: docx, xlsx, legacy doc',
      compose({
        subject: 'Documents',
        text: 'Please review.',
        attachments: [
          { filename: 'contract.docx', content: docx() },
          { filename: 'budget.xlsx', content: xlsx() },
          { filename: 'old.doc', content: oleDocClean(), contentType: 'application/msword' },
        ],
      }),
    ],
    [
      'PDF attachment, and a zip of PDFs',
      compose({
        subject: 'Invoices',
        text: 'Invoices attached.',
        attachments: [
          { filename: 'invoice-0042.pdf', content: SMALL_PDF },
          { filename: 'archive.zip', content: zip({ 'a.pdf': SMALL_PDF, 'b.pdf': SMALL_PDF }) },
        ],
      }),
    ],
    [
      'a gzip-compressed CSV export',
      compose({
        subject: 'Export',
        text: 'The nightly export.',
        attachments: [{ filename: 'export.csv.gz', content: gzipSync(Buffer.from('id;sum\n1;10\n2;20\n')) }],
      }),
    ],
    [
      'a forwarded message (message/rfc822)',
      compose({
        subject: 'Fwd: Quarterly numbers',
        text: 'FYI, see below.',
        attachments: [{ filename: 'forwarded.eml', content: forwarded, contentType: 'message/rfc822' }],
      }),
    ],
    [
      'a calendar invitation',
      compose({
        subject: 'Invitation: review',
        text: 'You are invited.',
        icalEvent: {
          method: 'REQUEST',
          content:
            'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:1@example.org\r\n' +
            'DTSTART:20240306T100000Z\r\nDTEND:20240306T110000Z\r\nSUMMARY:Review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n',
        },
      }),
    ],
    ['a bounce (multipart/report)', bounce()],
    ['koi8-r, quoted-printable body (Outlook Express style)', koi8r()],
    ['windows-1251, base64 body, RFC 2231 attachment name (The Bat! style)', cp1251()],
    ['8bit UTF-8 body without a transfer encoding to undo', eightBit()],
  ];
  return Promise.all(messages.map(async ([name, bytes]) => ({ name, bytes: await bytes })));
}

function bounce(): Buffer {
  return Buffer.from(
    [
      'From: MAILER-DAEMON@example.org',
      'To: anna@example.org',
      'Subject: Undelivered Mail Returned to Sender',
      'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"',
      '',
      '--B1',
      'Content-Description: Notification',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      'This is the mail system at host mx.example.org.',
      '',
      '--B1',
      'Content-Description: Delivery report',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; mx.example.org',
      '',
      'Final-Recipient: rfc822; nobody@example.net',
      'Action: failed',
      'Status: 5.1.1',
      '',
      '--B1',
      'Content-Description: Undelivered Message Headers',
      'Content-Type: text/rfc822-headers',
      '',
      'From: anna@example.org',
      'Subject: hello',
      '',
      '--B1--',
      '',
    ].join('\r\n'),
  );
}

function koi8r(): Buffer {
  const body = encodeCharset(
    'Здравствуйте!\r\nПрошу оплатить счёт № 42 до 10 марта.\r\nС уважением,\r\nбухгалтерия\r\n',
    'koi8-r',
  );
  const qp = [...body]
    .map((b) =>
      b >= 33 && b <= 126 && b !== 61
        ? String.fromCharCode(b)
        : b === 13 || b === 10 || b === 32
          ? String.fromCharCode(b)
          : `=${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
  return Buffer.from(
    [
      `From: ${encodedWord('Бухгалтерия', 'windows-1251')} <buh@example.ru>`,
      'To: boris@example.net',
      `Subject: ${encodedWord('Счёт на оплату', 'koi8-r')}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset="koi8-r"',
      'Content-Transfer-Encoding: quoted-printable',
      'X-Mailer: Microsoft Outlook Express 6.00.2900.5512',
      '',
      qp,
    ].join('\r\n'),
    'latin1',
  );
}

function cp1251(): Buffer {
  const text = encodeCharset('Добрый день.\r\nАкт сверки во вложении.\r\n', 'windows-1251');
  const name = encodeCharset('Акт сверки.pdf', 'windows-1251');
  const pct = [...name]
    .map((b) =>
      /[A-Za-z0-9.]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
  return Buffer.from(
    [
      `From: ${encodedWord('Ирина', 'windows-1251')} <irina@example.ru>`,
      'To: boris@example.net',
      `Subject: ${encodedWord('Акт сверки', 'windows-1251')}`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="----------1B2A3C"',
      'X-Mailer: The Bat! (v9.1.18) Professional',
      '',
      '------------1B2A3C',
      'Content-Type: text/plain; charset=windows-1251',
      'Content-Transfer-Encoding: base64',
      '',
      text.toString('base64'),
      '',
      '------------1B2A3C',
      'Content-Type: application/pdf',
      'Content-Transfer-Encoding: base64',
      `Content-Disposition: attachment; filename*=windows-1251''${pct}`,
      '',
      SMALL_PDF.toString('base64'),
      '',
      '------------1B2A3C--',
      '',
    ].join('\r\n'),
    'latin1',
  );
}

function eightBit(): Buffer {
  return Buffer.from(
    [
      'From: anna@example.org',
      'To: boris@example.net',
      'Subject: =?utf-8?B?0J/RgNC40LLQtdGC?=',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8; format=flowed',
      'Content-Transfer-Encoding: 8bit',
      '',
      'Привет! Встреча переносится на среду. ',
      'Анна',
      '',
    ].join('\r\n'),
  );
}
