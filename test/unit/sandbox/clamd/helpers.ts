import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { silentLogger } from '../../../../src/core/logger.js';
import type { Finding } from '../../../../src/core/outcome.js';
import type { PartMemo, ScanContext } from '../../../../src/core/scanner.js';
import { BufferMessage } from '../../../../src/mime/spool.js';

/** MIME walker limits for the parts-mode tests. */
export const WALK_LIMITS = {
  maxDepth: 8,
  maxParts: 100,
  maxArchiveMembers: 100,
  maxExpansionRatio: 100,
  ratioMinBytes: 1 << 20,
  maxTotalBytes: 1 << 26,
};

export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';

export function ctxFor(budgetMs: number, extra: { signal?: AbortSignal; memo?: PartMemo } = {}): ScanContext {
  return {
    signal: extra.signal ?? new AbortController().signal,
    deadline: Date.now() + budgetMs,
    log: silentLogger,
    memo: extra.memo ?? { run: (_key: string, compute: () => Promise<Finding>) => compute() },
    now: Date.now,
  };
}

export function message(body: string | Buffer, msgId = 'm1'): BufferMessage {
  return new BufferMessage(
    msgId,
    { sender: 'a@test.local', recipients: ['b@test.local'], frontEnd: 'cli' },
    Buffer.isBuffer(body) ? body : Buffer.from(body),
  );
}

/** A small RFC 5322 message; with `attachment`, multipart/mixed with it as a base64 part. */
export function eml(text: string, attachment?: { name: string; bytes: Buffer }): string {
  const head =
    'From: a@test.local\r\nTo: b@test.local\r\nSubject: test\r\nMessage-ID: <t@test.local>\r\nMIME-Version: 1.0\r\n';
  if (attachment === undefined) return `${head}Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n`;
  const b64 = attachment.bytes.toString('base64').replace(/.{1,76}/g, '$&\r\n');
  return (
    `${head}Content-Type: multipart/mixed; boundary="b1"\r\n\r\n` +
    `--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n` +
    `--b1\r\nContent-Type: application/octet-stream; name="${attachment.name}"\r\n` +
    `Content-Disposition: attachment; filename="${attachment.name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}` +
    `--b1--\r\n`
  );
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound, read, released). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
