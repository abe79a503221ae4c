import { z } from 'zod';
import { byteSize } from './durations.js';
import { bool, int, list } from './primitives.js';
import { clamdSchema } from './clamd.js';
import { icapSchema } from './icap.js';
import { ptSandboxSchema } from './pt-sandbox.js';
import { WINDOWS_RUNNABLE_EXTENSIONS } from './extensions.js';

/** The embedded rules engine: needs no server. */
export const rulesSchema = z
  .object({
    /** File extensions (lower case, without the dot) that make an attachment malicious. */
    blockedExtensions: list(z.string()).default([...WINDOWS_RUNNABLE_EXTENSIONS]),
    /** A double extension such as invoice.pdf.exe is malicious. */
    blockDoubleExtensions: bool.default(true),
    /** An executable (PE "MZ...PE", ELF) under a harmless name or type is malicious. */
    blockDisguisedExecutables: bool.default(true),
    /** The EICAR anti-virus test string anywhere in the message or a part is malicious. */
    eicar: bool.default(true),
    /** Office documents with VBA macros (OOXML vbaProject.bin, OLE _VBA_PROJECT): off, suspicious or malicious. */
    macros: z.enum(['off', 'suspicious', 'malicious']).prefault('suspicious'),
    /** SHA-256 hashes (hex) of attachments to treat as malicious. */
    blockedSha256: list(z.string().regex(/^[0-9a-fA-F]{64}$/, 'not a SHA-256 hex digest')).default([]),
    /** SHA-256 hashes (hex) of attachments always allowed (operator-released false positives). */
    allowedSha256: list(z.string().regex(/^[0-9a-fA-F]{64}$/, 'not a SHA-256 hex digest')).default([]),
    /** Decoded parts up to this size stay in memory while scanned; larger ones go to a spool file. */
    memorySpoolThreshold: byteSize.prefault('1M'),
    /** Limits of the MIME and archive walker: exceeding one makes the message failed(too-large) or suspicious (bomb). */
    limits: z
      .object({
        maxDepth: int.pipe(z.number().int().min(1).max(32)).default(8),
        maxParts: int.pipe(z.number().int().min(1)).default(1000),
        maxArchiveMembers: int.pipe(z.number().int().min(1)).default(1000),
        maxExpansionRatio: int.pipe(z.number().int().min(1)).default(100),
        /** The expansion ratio is judged only once a member has expanded past this size. */
        ratioMinBytes: byteSize.prefault('1M'),
        maxTotalBytes: byteSize.prefault('512M'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export const scannersSchema = z
  .object({
    rules: rulesSchema.prefault({}),
    clamd: clamdSchema.prefault({}),
    ptSandbox: ptSandboxSchema.prefault({}),
    icap: icapSchema.prefault({}),
  })
  .strict();

export const SCANNER_NAMES = ['rules', 'clamd', 'pt-sandbox', 'icap'] as const;
export type ScannerName = (typeof SCANNER_NAMES)[number];
