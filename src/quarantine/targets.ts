import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReleaseTarget } from '../core/config/quarantine.js';
import { SandgateError } from '../core/errors.js';

/** The envelope a released message is handed on with. */
export interface ReleaseEnvelope {
  /** '' for the null sender. */
  readonly sender: string;
  readonly recipients: readonly string[];
}

export interface Delivery {
  /** Human-readable target: smtp://host:port or the .sub file written. */
  readonly to: string;
  readonly accepted: readonly string[];
  readonly rejected: readonly string[];
  /** The target's answer (the SMTP reply to the final dot). */
  readonly response: string;
}

/** Produces the bytes to hand on, in the target's line-ending convention. */
export type MessageBytes = (options: {
  eol: 'crlf' | 'lf';
  envelopeFields: readonly string[];
}) => AsyncIterable<Buffer> | Iterable<Buffer>;

export interface DeliveryTarget {
  readonly describe: string;
  deliver(envelope: ReleaseEnvelope, bytes: MessageBytes, signal?: AbortSignal): Promise<Delivery>;
}

export interface TargetOptions {
  /** Our EHLO name. */
  readonly hostname: string;
  readonly timeoutMs: number;
}

export function deliveryTarget(target: ReleaseTarget, options: TargetOptions): DeliveryTarget {
  switch (target.kind) {
    case 'smtp':
      return new SmtpTarget(target.host, target.port, options);
    case 'submitted':
      return new SubmittedDirTarget(target.path);
  }
}

/** SMTP to a configured host with the original envelope (nodemailer; STARTTLS when offered). */
export class SmtpTarget implements DeliveryTarget {
  readonly describe: string;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly options: TargetOptions,
  ) {
    this.describe = `smtp://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  async deliver(envelope: ReleaseEnvelope, bytes: MessageBytes, signal?: AbortSignal): Promise<Delivery> {
    // Loaded on the first release: a relay or helper that never releases need not carry it.
    const { default: nodemailer } = await import('nodemailer');
    const transport = nodemailer.createTransport({
      host: this.host,
      port: this.port,
      secure: false,
      name: this.options.hostname,
      connectionTimeout: this.options.timeoutMs,
      greetingTimeout: this.options.timeoutMs,
      socketTimeout: this.options.timeoutMs,
      // Opportunistic: a loopback MTA with a self-signed certificate must not stop a release.
      tls: { rejectUnauthorized: false },
      logger: false,
    });
    const raw = Readable.from(bytes({ eol: 'crlf', envelopeFields: [] }));
    const onAbort = () => transport.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const info = await transport.sendMail({
        envelope: { from: envelope.sender, to: [...envelope.recipients] },
        raw,
      });
      const rejected = info.rejected.map(String);
      if (info.accepted.length === 0) {
        throw new SandgateError('ERR_QUARANTINE_RELEASE', `${this.describe} accepted no recipient`, {
          details: { target: this.describe, response: info.response },
        });
      }
      return { to: this.describe, accepted: info.accepted.map(String), rejected, response: info.response };
    } catch (cause) {
      if (cause instanceof SandgateError) throw cause;
      const e = cause as { message?: string; responseCode?: number; response?: string; code?: string };
      throw new SandgateError(
        'ERR_QUARANTINE_RELEASE',
        `${this.describe} did not take the message: ${e.response ?? e.message ?? String(cause)}`,
        {
          cause,
          details: {
            target: this.describe,
            ...(e.responseCode !== undefined ? { responseCode: e.responseCode } : {}),
            ...(e.code !== undefined ? { code: e.code } : {}),
          },
        },
      );
    } finally {
      signal?.removeEventListener('abort', onAbort);
      raw.destroy();
      transport.close();
    }
  }
}

/**
 * CommuniGate's PIPE module `Submitted` directory: an RFC 822 file in native (LF) line endings, no
 * dot-stuffing, the envelope in `Return-Path:` and `Envelope-To:` fields (which CommuniGate removes),
 * written as `.tmp` and renamed to `.sub` so the module never reads a half-written file.
 */
export class SubmittedDirTarget implements DeliveryTarget {
  readonly describe: string;

  constructor(private readonly dir: string) {
    this.describe = `submitted:${dir}`;
  }

  async deliver(envelope: ReleaseEnvelope, bytes: MessageBytes): Promise<Delivery> {
    const rcpts = envelope.recipients.filter((r) => isAddress(r));
    if (rcpts.length === 0 || rcpts.length !== envelope.recipients.length) {
      throw new SandgateError(
        'ERR_QUARANTINE_RELEASE',
        'a recipient address cannot be written as Envelope-To',
        {
          details: { target: this.describe },
        },
      );
    }
    if (envelope.sender !== '' && !isAddress(envelope.sender)) {
      throw new SandgateError(
        'ERR_QUARANTINE_RELEASE',
        'the sender address cannot be written as Return-Path',
        {
          details: { target: this.describe },
        },
      );
    }
    const fields = [`Return-Path: <${envelope.sender}>`, ...rcpts.map((r) => `Envelope-To: ${r}`)];
    const base = `sandgate-${Date.now()}-${randomBytes(6).toString('hex')}`;
    const tmp = join(this.dir, `${base}.tmp`);
    const sub = join(this.dir, `${base}.sub`);
    try {
      await pipeline(
        Readable.from(bytes({ eol: 'lf', envelopeFields: fields })),
        createWriteStream(tmp, { flags: 'wx', mode: 0o640, flush: true }),
      );
      await rename(tmp, sub);
    } catch (cause) {
      await rm(tmp, { force: true });
      throw new SandgateError(
        'ERR_QUARANTINE_RELEASE',
        `cannot write to ${this.dir}: ${(cause as Error).message}`,
        {
          cause,
          details: { target: this.describe },
        },
      );
    }
    return { to: sub, accepted: rcpts, rejected: [], response: `written ${sub}` };
  }
}

/** An address we may write into a header field: no line breaks, no angle brackets, one @. */
function isAddress(a: string): boolean {
  return /^[^\s<>@,;"]+@[^\s<>@,;"]+$/.test(a);
}
