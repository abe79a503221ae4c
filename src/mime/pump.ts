import type { Readable, Writable } from 'node:stream';

/**
 * Pipes readable -> transforms -> sink and settles when the sink finishes or any stage fails
 * (every stage is then destroyed). A lean stream/promises pipeline(): that one builds an
 * AbortController and an AbortError on every call, which costs more than a small part's bytes.
 */
export function pump(streams: readonly (Readable | Writable)[], signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sink = streams[streams.length - 1] as Writable;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      const error = err instanceof Error ? err : new Error(String(err));
      for (const s of streams) if (!s.destroyed) s.destroy(error);
      reject(error);
    };
    const onAbort = () => fail(signal?.reason ?? new Error('aborted'));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    for (const s of streams) s.once('error', fail);
    // A stage that closes without an error before its end would otherwise leave the chain waiting.
    for (let i = 0; i + 1 < streams.length; i++) {
      const stage = streams[i] as Readable;
      stage.once('close', () => {
        if (!stage.readableEnded) fail(prematureClose());
      });
    }
    sink.once('close', () => {
      if (!sink.writableFinished) fail(prematureClose());
    });
    sink.once('finish', () => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    for (let i = 0; i + 1 < streams.length; i++) {
      (streams[i] as Readable).pipe(streams[i + 1] as Writable);
    }
  });
}

function prematureClose(): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/** Resolves when `stream` can take more writes, or when it closed (the caller then sees why). */
export function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}
