/**
 * Name and magic-number checks on attachments and archive members. Pure functions over a file
 * name and the first bytes of the content.
 */
import { EXECUTABLE_EXTENSIONS } from '../../config/extensions.js';

/** Extensions that run code on Windows or Unix when opened: the target side of a double extension. */
const EXECUTABLE = new Set(EXECUTABLE_EXTENSIONS);

/** Extensions people trust: the decoy side of a double extension (invoice.pdf.exe). */
const DECOY_EXTENSIONS = new Set([
  'pdf',
  'doc',
  'docx',
  'xls',
  'xlsx',
  'ppt',
  'pptx',
  'rtf',
  'txt',
  'csv',
  'odt',
  'ods',
  'odp',
  'jpg',
  'jpeg',
  'png',
  'gif',
  'bmp',
  'tif',
  'tiff',
  'svg',
  'htm',
  'html',
  'xml',
  'zip',
  'rar',
  '7z',
  'mp3',
  'mp4',
  'wav',
  'avi',
  'mov',
  'eml',
  'msg',
  'ics',
  'vcf',
  'xps',
]);

/** The dot-separated extensions of a file name, lower case, whitespace around them dropped. */
export function extensions(filename: string): string[] {
  const base = filename.replace(/^.*[\\/]/, '');
  const pieces = base.split('.').map((p) => p.trim().toLowerCase());
  // The first piece is the stem (empty for ".bashrc", whose one extension is then "bashrc").
  return pieces.slice(1).filter((p) => p.length > 0);
}

export function blockedExtension(filename: string, blocked: ReadonlySet<string>): string | undefined {
  const ext = extensions(filename).at(-1);
  return ext !== undefined && blocked.has(ext) ? ext : undefined;
}

/** "invoice.pdf.exe": an executable extension right after a decoy one. Returns "pdf.exe". */
export function doubleExtension(filename: string, blocked: ReadonlySet<string>): string | undefined {
  const exts = extensions(filename);
  if (exts.length < 2) return undefined;
  const last = exts[exts.length - 1] as string;
  const decoy = exts[exts.length - 2] as string;
  if (!(EXECUTABLE.has(last) || blocked.has(last))) return undefined;
  return DECOY_EXTENSIONS.has(decoy) ? `${decoy}.${last}` : undefined;
}

export function isExecutableName(filename: string | undefined, blocked: ReadonlySet<string>): boolean {
  const ext = filename === undefined ? undefined : extensions(filename).at(-1);
  return ext !== undefined && (EXECUTABLE.has(ext) || blocked.has(ext));
}

/**
 * 'pe' for a Windows executable (MZ header whose e_lfanew points at "PE\0\0", or an MZ header with
 * a plausible e_lfanew beyond the bytes we have), 'elf' for an ELF binary, undefined otherwise.
 */
export function executableKind(head: Buffer): 'pe' | 'elf' | undefined {
  if (head.length >= 5 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46) {
    return head[4] === 1 || head[4] === 2 ? 'elf' : undefined;
  }
  if (head.length < 64 || head[0] !== 0x4d || head[1] !== 0x5a) return undefined;
  const lfanew = head.readUInt32LE(60);
  if (lfanew < 64 || lfanew > 16 * 1024 * 1024) return undefined;
  if (lfanew + 4 <= head.length) {
    return head.readUInt32BE(lfanew) === 0x50450000 ? 'pe' : undefined;
  }
  return 'pe';
}

const OLE_MAGIC = Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]);

/** An OLE2 compound file (.doc, .xls, .ppt, .msg). */
export function isOle(head: Buffer): boolean {
  return head.length >= 8 && head.subarray(0, 8).equals(OLE_MAGIC);
}

/** Marker of a VBA project inside an OLE compound file: the stream name (also the prefix of _VBA_PROJECT_CUR), UTF-16LE. */
export const OLE_VBA_MARKER = Buffer.from('_VBA_PROJECT', 'utf16le');

/** The OOXML part that holds macros: word/vbaProject.bin, xl/vbaProject.bin, ppt/vbaProject.bin. */
export function isOoxmlVbaProject(memberPath: string): boolean {
  return /(^|\/)vbaProject\.bin$/i.test(memberPath);
}
