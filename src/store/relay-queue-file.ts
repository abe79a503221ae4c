import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, PARTIAL } from './durable-file.js';
import type { PreparedItem, QueueEnvelope, QueueKind } from '../core/state-records.js';
import type { QueueFileWriter } from './relay-queue.js';

/** A queue file's name: `<id>.msg` (the envelope as one JSON line, then the message bytes). */
export const QUEUE_FILE_SUFFIX = '.msg';
const WRITE_BATCH = 256 * 1024;

/** Writes `<path>.partial` (envelope line, then the bytes), fsyncs it, renames it and fsyncs the directory. */
export const durableWriter: QueueFileWriter = {
  async write(path, head, body) {
    const tmp = path + PARTIAL;
    const fh = await open(tmp, 'wx', 0o600);
    try {
      let batch: Buffer[] = [head];
      let batched = head.length;
      for await (const chunk of body) {
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= WRITE_BATCH) {
          await writeAll(fh, batch);
          batch = [];
          batched = 0;
        }
      }
      if (batch.length > 0) await writeAll(fh, batch);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await fsyncDir(join(path, '..'));
  },
};

async function writeAll(fh: Awaited<ReturnType<typeof open>>, chunks: Buffer[]): Promise<void> {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const { bytesWritten } = await fh.writev(chunks);
  if (bytesWritten !== total) {
    // A short vectored write (rare): write the rest chunk by chunk.
    let skip = bytesWritten;
    for (const c of chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      await fh.write(c.subarray(skip));
      skip = 0;
    }
  }
}

/** The prepared item a complete message file in `dir` describes (its envelope line), or undefined. */
export function readPrepared(dir: string, file: string): PreparedItem | undefined {
  try {
    const path = join(dir, file);
    const fd = openSync(path, 'r');
    let n: number;
    const buf = Buffer.alloc(1024 * 1024);
    try {
      n = readSync(fd, buf, 0, buf.length, 0);
    } finally {
      closeSync(fd);
    }
    const nl = buf.subarray(0, n).indexOf(0x0a);
    if (nl < 0) return undefined;
    const head = JSON.parse(buf.subarray(0, nl).toString('utf8')) as {
      id: string;
      kind: QueueKind;
      createdAt: number;
      envelope: QueueEnvelope;
    };
    if (`${head.id}${QUEUE_FILE_SUFFIX}` !== file || !Array.isArray(head.envelope.recipients))
      return undefined;
    return {
      id: head.id,
      kind: head.kind,
      createdAt: head.createdAt,
      envelope: head.envelope,
      size: statSync(path).size - (nl + 1),
      file,
      dataOffset: nl + 1,
    };
  } catch {
    return undefined;
  }
}

/** Reads the envelope line of a queue file in `dir` (diagnostics). */
export function readQueueHead(dir: string, file: string): unknown {
  const fd = openSync(join(dir, file), 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const nl = buf.subarray(0, n).indexOf(0x0a);
    return JSON.parse(buf.subarray(0, nl < 0 ? n : nl).toString('utf8')) as unknown;
  } finally {
    closeSync(fd);
  }
}
