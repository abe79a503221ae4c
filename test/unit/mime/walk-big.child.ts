/**
 * Child process for memory.test.ts: walks a generated big message and prints one JSON line
 * with its peak RSS. argv: kind ('text' | 'attachment'), bytes, spoolDir.
 */
import { createHash } from 'node:crypto';
import { walkMessage } from '../../../src/mime/walker.js';
import { bigMessage } from '../../support/specimens.js';

const [kind, bytes, spoolDir] = process.argv.slice(2);
if ((kind !== 'text' && kind !== 'attachment') || bytes === undefined || spoolDir === undefined) {
  process.stderr.write('usage: walk-big.child.ts text|attachment BYTES SPOOLDIR\n');
  process.exit(2);
}
const message = bigMessage({ kind, bytes: Number(bytes) });
const parts: { path: string; size: number; sha256: string; reread: string }[] = [];
const summary = await walkMessage(
  message,
  {
    limits: {
      maxDepth: 8,
      maxParts: 1000,
      maxArchiveMembers: 1000,
      maxExpansionRatio: 100,
      ratioMinBytes: 1 << 20,
      maxTotalBytes: 512 << 20,
    },
    spoolDir,
    memoryThreshold: 1 << 20,
  },
  async (part) => {
    // Read the part again, as a scanner would, and check it hashes the same.
    const h = createHash('sha256');
    for await (const c of part.open()) h.update(c as Buffer);
    parts.push({ path: part.path, size: part.size, sha256: part.sha256, reread: h.digest('hex') });
  },
);
process.stdout.write(
  `${JSON.stringify({ maxRssBytes: process.resourceUsage().maxRSS * 1024, messageSize: message.size, summary, parts })}\n`,
);
