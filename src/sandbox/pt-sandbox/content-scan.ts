import type { Readable } from 'node:stream';
import type { PtSandboxConfig } from '../../config/pt-sandbox.js';
import type { MessageSource } from '../../core/message.js';
import { walkMessage, type WalkedPart, type WalkLimits, type WalkSummary } from '../../mime/walker.js';

/** What one walk of a message tells the PT Sandbox scanner. */
export interface MessageSurvey {
  /** Top-level attachments (not archive members, not parts of attached messages), one per distinct content. */
  readonly attachments: readonly AttachmentInfo[];
  /** A text or HTML body carries an http(s) link. */
  readonly links: boolean;
  readonly summary: WalkSummary;
}

export interface AttachmentInfo {
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
  readonly contentType: string;
  readonly filename?: string;
  /** Matches the prefilter's risky extensions or content types. */
  readonly risky: boolean;
}

/** Generous limits: the sandbox unpacks archives itself; we only need the top-level parts. */
export const SURVEY_LIMITS: WalkLimits = {
  maxDepth: 8,
  maxParts: 5000,
  maxArchiveMembers: 5000,
  maxExpansionRatio: 1000,
  ratioMinBytes: 1024 * 1024,
  maxTotalBytes: 1024 ** 3,
};

const LINK = /\b(?:https?:\/\/|www\.)[^\s"'<>]{3,}/i;

/** Whether a part looks worth a sandbox analysis under the prefilter's lists. */
export function isRisky(
  part: {
    contentType: string;
    filename?: string | undefined;
    container?: string | undefined;
    embedded?: string | undefined;
  },
  prefilter: PtSandboxConfig['prefilter'],
): boolean {
  if (part.container === 'message') return true;
  // A file hidden in a text body (uuencode, yEnc, begin-base64) is risky whatever its name; an
  // HTML data: URI counts by its media type like any attachment.
  if (part.embedded !== undefined && part.embedded !== 'data-uri') return true;
  const name = (part.filename ?? '').toLowerCase();
  const dot = name.lastIndexOf('.');
  const ext = dot >= 0 ? name.slice(dot + 1) : '';
  if (ext !== '' && prefilter.riskyExtensions.some((e) => e.toLowerCase().replace(/^\./, '') === ext))
    return true;
  const type = part.contentType.toLowerCase();
  return prefilter.riskyContentTypes.some((t) => type.startsWith(t.toLowerCase()));
}

/** Reads a stream and says whether it contains a link (a window across chunk borders). */
async function hasLink(stream: Readable): Promise<boolean> {
  let carry = '';
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    const text = carry + chunk.toString('latin1');
    if (LINK.test(text)) {
      stream.destroy();
      return true;
    }
    carry = text.slice(-256);
  }
  return false;
}

/** One walk: the top-level attachments and whether the bodies carry links. */
export async function surveyMessage(
  message: MessageSource,
  cfg: PtSandboxConfig,
  spoolDir: string,
  signal: AbortSignal,
): Promise<MessageSurvey> {
  const seen = new Map<string, AttachmentInfo>();
  let links = false;
  const summary = await walkMessage(
    message,
    { limits: SURVEY_LIMITS, spoolDir, expandArchives: false, signal },
    async (part) => {
      if (part.depth > 0) return;
      if (part.isAttachment) {
        if (part.encrypted === true || part.sha256 === '' || part.size === 0 || seen.has(part.sha256)) return;
        seen.set(part.sha256, {
          path: part.path,
          sha256: part.sha256,
          size: part.size,
          contentType: part.contentType,
          ...(part.filename !== undefined ? { filename: part.filename } : {}),
          risky: isRisky(part, cfg.prefilter),
        });
        return;
      }
      if (!links && (part.contentType.startsWith('text/') || part.contentType === ''))
        links = await hasLink(part.open());
    },
  );
  return { attachments: [...seen.values()], links, summary };
}

/**
 * Runs `fn` with the decoded bytes of one attachment (found again by path and SHA-256), while the
 * walker still holds them. Rejects if the message no longer has that part.
 */
export async function withAttachment<T>(
  message: MessageSource,
  info: AttachmentInfo,
  spoolDir: string,
  fn: (part: WalkedPart) => Promise<T>,
): Promise<T> {
  let result: { value: T } | { error: unknown } | undefined;
  await walkMessage(message, { limits: SURVEY_LIMITS, spoolDir, expandArchives: false }, async (part) => {
    if (part.path !== info.path || part.sha256 !== info.sha256) return;
    try {
      result = { value: await fn(part) };
    } catch (error) {
      // Kept aside and rethrown once the walk has ended (and released the part's bytes).
      result = { error };
    }
    return 'stop';
  });
  if (result === undefined) throw new Error(`attachment ${info.path} not found on the second walk`);
  if ('error' in result) throw result.error;
  return result.value;
}
