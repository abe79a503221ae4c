import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent } from 'undici';
import type { z } from 'zod';
import { SandgateError, isSandgateError, type ErrorCode } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import {
  healthDataSchema,
  imagesDataSchema,
  reportDataSchema,
  scanIdDataSchema,
  taskStatusDataSchema,
  uploadDataSchema,
  versionDataSchema,
  type CheckFileQuery,
  type CreateScanTaskBody,
  type SandboxImage,
  type TaskMode,
  type TaskStatus,
} from './types.js';
import { printable } from '../../core/text.js';

export interface PtClientOptions {
  /** Base address of the appliance (https://host[:port]); /api/v1 is appended. */
  readonly url: string;
  readonly token: string;
  /** PEM of the CA (or the appliance's self-signed certificate). */
  readonly ca?: string | Buffer;
  readonly insecureSkipVerify?: boolean;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** Attempts per request on 5xx / 429 / connection errors, with a linear backoff. */
  readonly attempts: number;
  readonly backoffMs: number;
  readonly log: Logger;
}

/** Limits of one API call: aborted by `signal`; retries stop when the next attempt would start after `until`. */
export interface CallOptions {
  readonly signal?: AbortSignal;
  /** Epoch ms; default: now + requestTimeout. */
  readonly until?: number;
  /**
   * Retry 429 and 503 (the appliance is overloaded) inside this call, as other transient errors.
   * Default true; submissions pass false and back off in their in-flight window instead.
   */
  readonly retryOverload?: boolean;
}

/** A body we can produce again for a retry: a fresh stream of `length` bytes each call. */
export interface BodySource {
  readonly length: number;
  open(): Readable;
}

interface Call {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly json?: unknown;
  readonly body?: BodySource;
  readonly query?: Readonly<Record<string, string>>;
}

const RETRYABLE_NET = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
]);

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|EPROTO/;

/** Removes null and undefined fields at every level: the API rejects requests containing nulls. */
export function withoutNulls<T>(value: T): T {
  if (Array.isArray(value)) return value.filter((v) => v !== null && v !== undefined).map(withoutNulls) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) out[k] = withoutNulls(v);
    return out as T;
  }
  return value;
}

/**
 * The PT Sandbox public API over undici. Every reply is read to its end; errors become
 * SandgateErrors with `details.status` (HTTP) and `details.endpoint`; the token is only ever in
 * the X-API-Key header, never in an error, a detail or a log line.
 */
export class PtSandboxClient {
  /**
   * undici and its connection pool, loaded at the first call: its modules hold about 5 MB of heap
   * that a process whose chain has no PT Sandbox (or has not called it yet) need not carry.
   */
  private http: Promise<{ agent: Agent; request: typeof import('undici').request }> | undefined;
  private closed = false;
  private readonly base: string;
  private readonly token: string;

  constructor(private readonly options: PtClientOptions) {
    this.base = `${options.url.replace(/\/+$/, '')}/api/v1/`;
    this.token = options.token;
  }

  /** Base address shown to operators (no token in it). */
  get url(): string {
    return this.options.url;
  }

  async close(): Promise<void> {
    this.closed = true;
    const http = this.http;
    this.http = undefined;
    if (http !== undefined) await (await http).agent.close();
  }

  private connection(): Promise<{ agent: Agent; request: typeof import('undici').request }> {
    if (this.closed) {
      return Promise.reject(new SandgateError('ERR_SCANNER_UNAVAILABLE', 'the PT Sandbox client is closed'));
    }
    const o = this.options;
    return (this.http ??= import('undici').then(({ Agent, request }) => ({
      agent: new Agent({
        connect: {
          timeout: o.connectTimeoutMs,
          rejectUnauthorized: o.insecureSkipVerify !== true,
          ...(o.ca !== undefined ? { ca: o.ca } : {}),
        },
        keepAliveTimeout: 30_000,
        headersTimeout: o.requestTimeoutMs,
        bodyTimeout: o.requestTimeoutMs,
      }),
      request,
    })));
  }

  async uploadScanFile(body: BodySource, opts: CallOptions = {}): Promise<{ fileUri: string; ttl?: number }> {
    const data = await this.call(
      { method: 'POST', path: 'storage/uploadScanFile', body },
      uploadDataSchema,
      opts,
    );
    return { fileUri: data.file_uri, ...(data.ttl !== undefined ? { ttl: data.ttl } : {}) };
  }

  async createScanTask(task: CreateScanTaskBody, opts: CallOptions = {}): Promise<string> {
    const data = await this.call(
      { method: 'POST', path: 'analysis/createScanTask', json: task },
      scanIdDataSchema,
      opts,
    );
    return data.scan_id;
  }

  /** One-shot upload + scan with the token's source settings (/scan/checkFile), asynchronous. */
  async checkFile(body: BodySource, query: CheckFileQuery, opts: CallOptions = {}): Promise<string> {
    const q: Record<string, string> = { async_result: 'true', short_result: 'true' };
    if (query.file_name !== undefined) q.file_name = query.file_name;
    if (query.priority !== undefined) q.priority = String(query.priority);
    if (query.passwords_for_unpack !== undefined && query.passwords_for_unpack.length > 0) {
      q.passwords_for_unpack = JSON.stringify(query.passwords_for_unpack);
    }
    const data = await this.call(
      { method: 'POST', path: 'scan/checkFile', body, query: q },
      scanIdDataSchema,
      opts,
    );
    return data.scan_id;
  }

  /** checkTask (analysis) or getStatus (source): no `result` yet means still running. */
  async taskStatus(
    mode: TaskMode,
    scanId: string,
    allowPreflight: boolean,
    opts: CallOptions = {},
  ): Promise<TaskStatus> {
    const path = mode === 'analysis' ? 'analysis/checkTask' : 'scan/getStatus';
    return this.call(
      { method: 'POST', path, json: { scan_id: scanId, allow_preflight: allowPreflight } },
      taskStatusDataSchema,
      opts,
    );
  }

  /** The full report tree (analysis/report or scan/getFullReport). */
  async report(
    mode: TaskMode,
    scanId: string,
    opts: CallOptions = {},
  ): Promise<z.output<typeof reportDataSchema>> {
    const path = mode === 'analysis' ? 'analysis/report' : 'scan/getFullReport';
    return this.call({ method: 'POST', path, json: { scan_id: scanId } }, reportDataSchema, opts);
  }

  async checkHealth(opts: CallOptions = {}): Promise<string> {
    return (await this.call({ method: 'GET', path: 'maintenance/checkHealth' }, healthDataSchema, opts))
      .status;
  }

  async getVersion(opts: CallOptions = {}): Promise<{ version: string; edition?: string }> {
    const data = await this.call({ method: 'GET', path: 'maintenance/getVersion' }, versionDataSchema, opts);
    return { version: data.version, ...(data.edition !== undefined ? { edition: data.edition } : {}) };
  }

  async getImages(opts: CallOptions = {}): Promise<SandboxImage[]> {
    return this.call({ method: 'POST', path: 'engines/sandbox/getImages' }, imagesDataSchema, opts);
  }

  /** One API call with retries on 5xx, 429 and connection errors, inside opts.until. */
  private async call<S extends z.ZodType>(call: Call, schema: S, opts: CallOptions): Promise<z.output<S>> {
    const until = opts.until ?? Date.now() + this.options.requestTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once(call, schema, opts.signal, until);
      } catch (err) {
        const retryable =
          isSandgateError(err) &&
          err.details.retryable === true &&
          !(opts.retryOverload === false && err.details.overload === true);
        const wait = this.options.backoffMs * attempt;
        if (
          !retryable ||
          attempt >= this.options.attempts ||
          Date.now() + wait >= until ||
          opts.signal?.aborted
        ) {
          throw err;
        }
        this.options.log.warn(
          { event: 'pt.retry', endpoint: call.path, attempt, status: err.details.status, waitMs: wait },
          'PT Sandbox call failed, retrying',
        );
        await sleep(wait, undefined, opts.signal ? { signal: opts.signal } : {}).catch(() => undefined);
        if (opts.signal?.aborted) throw aborted(call.path, opts.signal);
      }
    }
  }

  private async once<S extends z.ZodType>(
    call: Call,
    schema: S,
    signal: AbortSignal | undefined,
    until: number,
  ): Promise<z.output<S>> {
    if (signal?.aborted) throw aborted(call.path, signal);
    const { agent, request } = await this.connection();
    const budget = Math.max(1, Math.min(this.options.requestTimeoutMs, until - Date.now()));
    const timeout = AbortSignal.timeout(budget);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    const url = new URL(call.path, this.base);
    for (const [k, v] of Object.entries(call.query ?? {})) url.searchParams.set(k, v);

    const headers: Record<string, string> = { 'x-api-key': this.token, accept: 'application/json' };
    let body: string | Readable | undefined;
    if (call.body !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      // Explicit length: the appliance cannot handle chunked uploads.
      headers['content-length'] = String(call.body.length);
      body = call.body.open();
    } else if (call.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(withoutNulls(call.json));
    }

    let status: number;
    let text: string;
    let retryAfter: string | string[] | undefined;
    try {
      const res = await request(url, {
        method: call.method,
        headers,
        dispatcher: agent,
        signal: combined,
        ...(body !== undefined ? { body } : {}),
      });
      status = res.statusCode;
      retryAfter = res.headers['retry-after'];
      text = await res.body.text();
    } catch (cause) {
      if (body !== undefined && typeof body !== 'string') body.destroy();
      throw transportError(call.path, cause, signal, timeout, budget);
    }

    if (status >= 200 && status < 300) {
      const envelope = parseJson(text);
      if (
        envelope === undefined ||
        typeof envelope !== 'object' ||
        envelope === null ||
        !('data' in envelope)
      ) {
        throw new SandgateError(
          'ERR_SCANNER_PROTOCOL',
          `PT Sandbox ${call.path}: the reply is not an API envelope`,
          {
            details: { endpoint: call.path, status },
          },
        );
      }
      const errors = (envelope as { errors?: unknown }).errors;
      if (Array.isArray(errors) && errors.length > 0) {
        throw new SandgateError(
          'ERR_SCANNER_PROTOCOL',
          `PT Sandbox ${call.path}: ${describeErrors(errors)}`,
          {
            details: { endpoint: call.path, status },
          },
        );
      }
      const parsed = schema.safeParse(envelope.data);
      if (!parsed.success) {
        throw new SandgateError('ERR_SCANNER_PROTOCOL', `PT Sandbox ${call.path}: unexpected reply shape`, {
          cause: parsed.error,
          details: { endpoint: call.path, status },
        });
      }
      return parsed.data;
    }
    throw httpError(call.path, status, text, typeof retryAfter === 'string' ? retryAfter : undefined);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describeErrors(errors: unknown[]): string {
  return errors
    .map((e) => {
      if (e !== null && typeof e === 'object') {
        const { type, message } = e as { type?: unknown; message?: unknown };
        return [type, message].filter((x) => typeof x === 'string').join(': ');
      }
      return String(e);
    })
    .join('; ')
    .slice(0, 300);
}

/** Error text from a non-2xx reply: JSON envelope errors, or the first line of a plain-text body. */
function replyText(text: string): string {
  const json = parseJson(text);
  if (json !== null && typeof json === 'object' && Array.isArray((json as { errors?: unknown }).errors)) {
    const described = describeErrors((json as { errors: unknown[] }).errors);
    if (described !== '') return described;
  }
  return printable(text.split(/\r?\n/, 1)[0] ?? '', { ascii: true, max: 200 });
}

/** Retry-After as milliseconds (delta-seconds or an HTTP date), capped at 5 minutes; undefined if absent or unreadable. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  const ms = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), 300_000) : undefined;
}

function httpError(endpoint: string, status: number, text: string, retryAfter?: string): SandgateError {
  const said = replyText(text);
  let code: ErrorCode;
  let retryable = false;
  if (status === 401 || status === 403) code = 'ERR_SCANNER_UNAVAILABLE';
  else if (status === 413) code = 'ERR_SCANNER_TOO_LARGE';
  else if (status === 429 || status >= 500) {
    code = 'ERR_SCANNER_UNAVAILABLE';
    retryable = true;
  } else code = 'ERR_SCANNER_PROTOCOL';
  // 429 Too Many Requests and 503 Service Unavailable: the appliance is overloaded, not broken.
  const overload = status === 429 || status === 503;
  const after = overload ? retryAfterMs(retryAfter) : undefined;
  return new SandgateError(code, `PT Sandbox ${endpoint}: HTTP ${status}${said ? ` (${said})` : ''}`, {
    details: {
      endpoint,
      status,
      retryable,
      ...(overload ? { overload: true } : {}),
      ...(after !== undefined ? { retryAfterMs: after } : {}),
    },
  });
}

function aborted(endpoint: string, signal: AbortSignal): SandgateError {
  return new SandgateError('ERR_ABORTED', `PT Sandbox ${endpoint}: aborted`, {
    cause: signal.reason,
    details: { endpoint },
  });
}

function transportError(
  endpoint: string,
  cause: unknown,
  signal: AbortSignal | undefined,
  timeout: AbortSignal,
  budget: number,
): SandgateError {
  if (signal?.aborted) return aborted(endpoint, signal);
  const code = errCode(cause);
  if (timeout.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new SandgateError('ERR_SCANNER_TIMEOUT', `PT Sandbox ${endpoint}: no reply within ${budget} ms`, {
      cause,
      details: { endpoint },
    });
  }
  if (code !== undefined && TLS_CODES.test(code)) {
    return new SandgateError('ERR_SCANNER_UNAVAILABLE', `PT Sandbox ${endpoint}: TLS failed (${code})`, {
      cause,
      details: { endpoint, tls: code },
    });
  }
  return new SandgateError(
    'ERR_SCANNER_UNAVAILABLE',
    `PT Sandbox ${endpoint}: cannot connect (${code ?? 'error'})`,
    {
      cause,
      details: { endpoint, net: code ?? 'error', retryable: code === undefined || RETRYABLE_NET.has(code) },
    },
  );
}

function errCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') return code;
  }
  return undefined;
}
