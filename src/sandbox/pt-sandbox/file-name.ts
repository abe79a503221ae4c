import { decodeHeaderText } from '../../mime/header-text.js';

/** Fields a fileNameTemplate may use. */
export interface FileNameFields {
  readonly msgId: string;
  /** The decoded Subject (subjectForFileName). */
  readonly subject?: string | undefined;
  /** The attachment's own name (attachments mode). */
  readonly filename?: string | undefined;
}

const MAX_NAME = 120;

/** Whether the template needs the message's Subject (read from the header block only then). */
export function templateNeedsSubject(template: string): boolean {
  return template.includes('{subject}');
}

/**
 * The Subject as the sandbox UI should show it: the raw header value (its bytes as a latin1 string,
 * as the header parser gives it) with 8-bit UTF-8 read as UTF-8 and RFC 2047 encoded words decoded
 * in their charsets (libmime, mailparser's decoder).
 */
export function subjectForFileName(raw: string): string {
  return decodeHeaderText(raw);
}

/**
 * The file_name shown in the sandbox UI. Placeholders: {msgId}, {subject}, {filename}. The result
 * is one line of printable text without path separators, at most 120 characters, never empty.
 */
export function renderFileName(template: string, fields: FileNameFields): string {
  const rendered = template.replace(/\{(msgId|subject|filename)\}/g, (_m, name: string) => {
    switch (name) {
      case 'msgId':
        return fields.msgId;
      case 'subject':
        return fields.subject ?? '';
      default:
        return fields.filename ?? '';
    }
  });
  let name = rendered
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f/\\]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  if (name.length > MAX_NAME) {
    const dot = name.lastIndexOf('.');
    const ext = dot > 0 && name.length - dot <= 8 ? name.slice(dot) : '';
    name = name.slice(0, MAX_NAME - ext.length).trimEnd() + ext;
  }
  if (name === '' || /^\.[^.]*$/.test(name)) name = `${fields.msgId}${name}`;
  return name;
}
