/**
 * A protocol-faithful fake PT Sandbox public API (docs/pt-sandbox.md; reference §6) over node:http
 * on 127.0.0.1, port 0. Used by the PT Sandbox scanner tests and by the helper and relay tests.
 *
 *   const sb = await startFakePtSandbox({ taskDurationMs: 200 });
 *   // scanners.ptSandbox.url = sb.url, token FAKE_PT_TOKEN
 *   sb.counters['analysis/createScanTask'];  // requests per endpoint
 *   sb.failNext(3);                           // the next 3 requests get 503 (plain text)
 *   await sb.close();
 *
 * Verdicts by content (first match wins):
 *   - a line `X-Test-Verdict: <V>` anywhere in the bytes, V one of CLEAN, UNWANTED, DANGEROUS,
 *     PARTIAL (CLEAN/PARTIAL), PARTIAL-DANGEROUS, ENCRYPTED (CLEAN/PARTIAL + encrypted error),
 *     UNSCANNED (+ internal error), UNKNOWN (verdict UNKNOWN), NOVERDICT (no verdict field),
 *     SLOW (CLEAN after `slowTaskMs`);
 *   - the EICAR test string (raw, or base64 as in a mail attachment) -> DANGEROUS "EICAR-Test-File";
 *   - the marker `PT-FAKE-UNWANTED` -> UNWANTED "Fake.Unwanted";
 *   - anything else -> CLEAN.
 * Or pass `verdictFor` to decide yourself.
 *
 * Load: `slots` models the appliance's analysis slots: a task beyond them waits in the appliance's
 * queue (FIFO) before its `taskDurationMs` starts, so its age grows with the queue; `overload`
 * makes submissions (uploadScanFile, createScanTask, scan/checkFile) answer 429 or 503 while that
 * queue is at least `maxQueue` long (with Retry-After when `retryAfterSec` is set), and
 * `refuseSubmissions(status)` refuses every submission until it is called without a status.
 * `setVersionBehaviour({ status, delayMs })` makes maintenance/getVersion fail or answer late.
 *
 * Behaviour: missing or wrong X-API-Key -> 401 plain text "Authorization required"; a token without
 * the permission for the endpoint family -> 403; chunked uploads -> 411; a body over
 * `maxUploadSize` -> 413; `null` anywhere in a JSON body -> 400; unknown file_uri / scan_id -> 404,
 * and so is a task polled or its report read with another token than the one that created it
 * (counted by foreignTokenReads());
 * behavioural analysis without image_id -> 400; a /scan/* task polled through /analysis/checkTask
 * (or the reverse) -> 401; unknown path -> 404 envelope; wrong method -> 405 envelope.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export const FAKE_PT_TOKEN = 'fake-pt-token-0123456789abcdef';
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
const EICAR_B64_PREFIX = Buffer.from(EICAR).toString('base64').slice(0, 40);

export type FakeVerdictName =
  | 'CLEAN'
  | 'UNWANTED'
  | 'DANGEROUS'
  | 'PARTIAL'
  | 'PARTIAL-DANGEROUS'
  | 'ENCRYPTED'
  | 'UNSCANNED'
  | 'UNKNOWN'
  | 'NOVERDICT'
  | 'SLOW';

export interface FakeResult {
  readonly scan_state: string;
  readonly verdict?: string;
  readonly threat: string;
  readonly errors: readonly { type: string; message: string }[];
  /** Detection names in the report tree. */
  readonly detections: readonly string[];
  /** Task duration override (ms). */
  readonly durationMs?: number;
}

export type Permission = 'analysis' | 'source';

export interface FakePtSandboxOptions {
  /** Accepted tokens and their permissions. Default: FAKE_PT_TOKEN with both. */
  readonly tokens?: Readonly<Record<string, readonly Permission[]>>;
  /** Time from task creation to its final result (ms). Default 0. */
  readonly taskDurationMs?: number;
  /** Duration of X-Test-Verdict: SLOW tasks. Default 60 s. */
  readonly slowTaskMs?: number;
  /** With allow_preflight, answer a preflight result during the first half of the task. Default true. */
  readonly preflight?: boolean;
  /** Bodies above this many bytes get 413. Default 50 MiB. */
  readonly maxUploadSize?: number;
  readonly uploadTtlMs?: number;
  readonly version?: string;
  readonly verdictFor?: (bytes: Buffer) => FakeResult;
  /** Serve HTTPS with this key and certificate (PEM) instead of plain HTTP. */
  readonly tls?: { readonly key: string | Buffer; readonly cert: string | Buffer };
  /** Analysis slots: tasks beyond this many wait in the appliance's queue. Default: unlimited. */
  readonly slots?: number;
  /** Refuse submissions while the queue holds at least maxQueue tasks. */
  readonly overload?: OverloadOptions;
}

export interface OverloadOptions {
  readonly maxQueue: number;
  /** 429 (default) or 503. */
  readonly status?: 429 | 503;
  /** Send Retry-After with this many seconds. */
  readonly retryAfterSec?: number;
}

/** What the appliance is doing now, and the most it has done at once. */
export interface FakeLoad {
  /** Tasks in an analysis slot. */
  readonly running: number;
  /** Tasks waiting for a slot. */
  readonly queued: number;
  /** Tasks created whose final result no poll has returned yet (in flight from the client's view). */
  readonly uncollected: number;
  readonly maxRunning: number;
  readonly maxQueued: number;
  /** Submissions refused with 429/503 so far. */
  readonly refused: number;
}

export interface UploadRecord {
  readonly endpoint: string;
  readonly contentLength: string | undefined;
  readonly transferEncoding: string | undefined;
  readonly size: number;
  readonly refused?: number;
}

export interface FakeTask {
  readonly scanId: string;
  readonly family: Permission;
  readonly token: string;
  readonly fileName: string | undefined;
  readonly bytes: Buffer;
  readonly createdAt: number;
  /** When the task got an analysis slot (undefined while queued). */
  readonly startedAt: number | undefined;
  /** When its result is ready (Infinity while queued). */
  readonly readyAt: number;
  /** When a poll first returned its final result. */
  readonly collectedAt: number | undefined;
  readonly result: FakeResult;
}

/** The fake's own view of a task (mutable while it waits, runs and is collected). */
type TaskState = { -readonly [K in keyof FakeTask]: FakeTask[K] };

export interface FakePtSandbox {
  /** Base address to configure (no /api/v1). */
  readonly url: string;
  readonly port: number;
  /** Requests per endpoint ('storage/uploadScanFile', 'analysis/createScanTask', ...), including refused ones. */
  readonly counters: Record<string, number>;
  /** Every upload body received (uploadScanFile and scan/checkFile), with its framing headers. */
  readonly uploads: UploadRecord[];
  /** JSON bodies of createScanTask as received (to assert on options and on the absence of nulls). */
  readonly createBodies: unknown[];
  /** Query strings of scan/checkFile. */
  readonly checkFileQueries: URLSearchParams[];
  /** Tasks by scan_id. */
  readonly tasks: Map<string, FakeTask>;
  /** Tasks created so far (analysis and source). */
  tasksCreated(): number;
  /**
   * Polls and report reads of an existing task with a token other than the one that created it
   * (answered 404 like an unknown task: the appliance binds a task's results to its token).
   */
  foreignTokenReads(): number;
  /** The next `count` requests (to `endpoint` only, if given) fail with `status` (plain text body). */
  failNext(count: number, options?: { status?: number; endpoint?: string }): void;
  /** Forgets every task: polls get 404 (an appliance that lost its tasks). */
  forgetTasks(): void;
  setTaskDuration(ms: number): void;
  /** Makes every running and queued task finish now. */
  finishAll(): void;
  /** Refuse every submission with this status (429 or 503) until called with undefined. */
  refuseSubmissions(status: 429 | 503 | undefined, options?: { retryAfterSec?: number }): void;
  /** maintenance/getVersion: answer `status` (plain text) and/or only after `delayMs`; undefined: normal. */
  setVersionBehaviour(behaviour: { status?: number; delayMs?: number } | undefined): void;
  setVersion(version: string): void;
  load(): FakeLoad;
  close(): Promise<void>;
}

/** The built-in verdict rules (see the file comment). */
export function defaultVerdict(bytes: Buffer, slowTaskMs = 60_000): FakeResult {
  const text = bytes.toString('latin1');
  const m = /X-Test-Verdict:[ \t]*([A-Z-]+)/.exec(text);
  const ok = (verdict: string, detections: string[] = [], scanState = 'FULL'): FakeResult => ({
    scan_state: scanState,
    verdict,
    threat: detections[0] ?? '',
    errors: [],
    detections,
  });
  switch (m?.[1] as FakeVerdictName | undefined) {
    case 'CLEAN':
      return ok('CLEAN');
    case 'UNWANTED':
      return ok('UNWANTED', ['Fake.Unwanted.Marker']);
    case 'DANGEROUS':
      return ok('DANGEROUS', ['Fake.Dangerous.Marker']);
    case 'PARTIAL':
      return ok('CLEAN', [], 'PARTIAL');
    case 'PARTIAL-DANGEROUS':
      return ok('DANGEROUS', ['Fake.Dangerous.Partial'], 'PARTIAL');
    case 'ENCRYPTED':
      return { ...ok('CLEAN', [], 'PARTIAL'), errors: [{ type: 'encrypted', message: 'encrypted archive' }] };
    case 'UNSCANNED':
      return {
        scan_state: 'UNSCANNED',
        threat: '',
        errors: [{ type: 'internal', message: 'engine failed' }],
        detections: [],
      };
    case 'UNKNOWN':
      return ok('UNKNOWN');
    case 'NOVERDICT':
      return { scan_state: 'FULL', threat: '', errors: [], detections: [] };
    case 'SLOW':
      return { ...ok('CLEAN'), durationMs: slowTaskMs };
    case undefined:
      break;
  }
  if (text.includes(EICAR) || text.includes(EICAR_B64_PREFIX)) return ok('DANGEROUS', ['EICAR-Test-File']);
  if (text.includes('PT-FAKE-UNWANTED')) return ok('UNWANTED', ['Fake.Unwanted']);
  return ok('CLEAN');
}

interface Route {
  readonly methods: readonly string[];
  readonly family?: Permission;
  readonly handle: (req: IncomingMessage, res: ServerResponse, ctx: RequestCtx) => Promise<void> | void;
}

interface RequestCtx {
  readonly token: string;
  readonly url: URL;
  readonly endpoint: string;
}

export async function startFakePtSandbox(options: FakePtSandboxOptions = {}): Promise<FakePtSandbox> {
  const tokens = options.tokens ?? { [FAKE_PT_TOKEN]: ['analysis', 'source'] };
  const slots = options.slots ?? Number.POSITIVE_INFINITY;
  let version = options.version ?? '5.11.0.12345';
  let versionBehaviour: { status?: number; delayMs?: number } | undefined;
  let refusing: { status: 429 | 503; retryAfterSec?: number } | undefined;
  const waiting: TaskState[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let running = 0;
  let maxRunning = 0;
  let maxQueued = 0;
  let refusedCount = 0;
  const maxUpload = options.maxUploadSize ?? 50 * 1024 * 1024;
  const ttl = options.uploadTtlMs ?? 3_600_000;
  const preflight = options.preflight ?? true;
  const slowTaskMs = options.slowTaskMs ?? 60_000;
  const verdictFor = options.verdictFor ?? ((b: Buffer) => defaultVerdict(b, slowTaskMs));
  let taskDuration = options.taskDurationMs ?? 0;
  const counters: Record<string, number> = {};
  const uploads: UploadRecord[] = [];
  const createBodies: unknown[] = [];
  const checkFileQueries: URLSearchParams[] = [];
  const files = new Map<string, { bytes: Buffer; expires: number; token: string }>();
  let foreignReads = 0;
  const tasks = new Map<string, TaskState>();
  const failures: { remaining: number; status: number; endpoint?: string }[] = [];

  const durationOf = (task: TaskState): number => task.result.durationMs ?? taskDuration;

  /** Gives queued tasks free slots, in order; each slot is freed when its task's time is up. */
  const pump = (): void => {
    while (running < slots && waiting.length > 0) {
      const task = waiting.shift() as TaskState;
      const now = Date.now();
      task.startedAt = now;
      task.readyAt = now + durationOf(task);
      running++;
      maxRunning = Math.max(maxRunning, running);
      const timer = setTimeout(() => {
        timers.delete(timer);
        running--;
        pump();
      }, durationOf(task));
      timers.add(timer);
    }
  };

  const newTask = (
    family: Permission,
    token: string,
    bytes: Buffer,
    fileName: string | undefined,
  ): TaskState => {
    const result = verdictFor(bytes);
    const now = Date.now();
    const task: TaskState = {
      scanId: randomUUID(),
      family,
      token,
      fileName,
      bytes,
      createdAt: now,
      startedAt: now,
      readyAt: now + (result.durationMs ?? taskDuration),
      collectedAt: undefined,
      result,
    };
    tasks.set(task.scanId, task);
    if (Number.isFinite(slots)) {
      task.startedAt = undefined;
      task.readyAt = Number.POSITIVE_INFINITY;
      waiting.push(task);
      pump();
      maxQueued = Math.max(maxQueued, waiting.length);
    }
    return task;
  };

  /** Why a submission is refused now (429/503), if it is. */
  const refusal = (): { status: 429 | 503; retryAfterSec?: number } | undefined => {
    if (refusing !== undefined) return refusing;
    const o = options.overload;
    if (o !== undefined && waiting.length >= o.maxQueue) {
      return {
        status: o.status ?? 429,
        ...(o.retryAfterSec !== undefined ? { retryAfterSec: o.retryAfterSec } : {}),
      };
    }
    return undefined;
  };

  const status = (task: TaskState, allowPreflight: boolean): Record<string, unknown> => {
    const now = Date.now();
    if (now >= task.readyAt) {
      task.collectedAt ??= now;
      return { scan_id: task.scanId, result: resultJson(task) };
    }
    const half = (task.startedAt ?? now) + (task.readyAt - (task.startedAt ?? now)) / 2;
    if (allowPreflight && preflight && now >= half) {
      const dangerous = task.result.verdict === 'DANGEROUS';
      return {
        scan_id: task.scanId,
        is_preflight: true,
        result: { ...resultJson(task), scan_state: 'PARTIAL', verdict: dangerous ? 'DANGEROUS' : 'CLEAN' },
      };
    }
    return { scan_id: task.scanId };
  };

  const pollTask = async (req: IncomingMessage, res: ServerResponse, ctx: RequestCtx, family: Permission) => {
    const body = await readJson(req, res);
    if (body === undefined) return;
    const scanId = (body as { scan_id?: unknown }).scan_id;
    const task = typeof scanId === 'string' ? tasks.get(scanId) : undefined;
    if (task !== undefined && task.token !== ctx.token) foreignReads++;
    if (task === undefined || task.token !== ctx.token)
      return envelopeError(res, 404, 'HTTPNotFound', `Task "${String(scanId)}" not found`);
    if (task.family !== family) return plain(res, 401, 'Authorization required');
    sendData(res, status(task, (body as { allow_preflight?: unknown }).allow_preflight === true));
  };

  const report = async (req: IncomingMessage, res: ServerResponse, ctx: RequestCtx, family: Permission) => {
    const body = await readJson(req, res);
    if (body === undefined) return;
    const scanId = (body as { scan_id?: unknown }).scan_id;
    const task = typeof scanId === 'string' ? tasks.get(scanId) : undefined;
    if (task !== undefined && task.token !== ctx.token) foreignReads++;
    if (task === undefined || task.token !== ctx.token || task.family !== family) {
      return envelopeError(res, 404, 'HTTPNotFound', `Task "${String(scanId)}" not found`);
    }
    if (Date.now() < task.readyAt) return sendData(res, { scan_id: task.scanId });
    sendData(res, { scan_id: task.scanId, result: resultJson(task), artifacts: reportTree(task) });
  };

  const routes: Record<string, Route> = {
    'storage/uploadScanFile': {
      methods: ['POST'],
      family: 'analysis',
      handle: async (req, res, ctx) => {
        const bytes = await readUpload(req, res, ctx.endpoint);
        if (bytes === undefined) return;
        const now = new Date();
        const hour = now.toISOString().slice(0, 13).replace('T', '-');
        const uri = `sfm-files:///${hour}/${randomUUID()}/${randomUUID()}`;
        files.set(uri, { bytes, expires: Date.now() + ttl, token: ctx.token });
        sendData(res, { file_uri: uri, ttl: Math.round(ttl / 1000) });
      },
    },
    'analysis/createScanTask': {
      methods: ['POST'],
      family: 'analysis',
      handle: async (req, res, ctx) => {
        const body = (await readJson(req, res)) as Record<string, unknown> | undefined;
        if (body === undefined) return;
        createBodies.push(body);
        const uri = body.file_uri;
        const file = typeof uri === 'string' ? files.get(uri) : undefined;
        if (file === undefined || file.expires < Date.now() || file.token !== ctx.token) {
          return envelopeError(res, 404, 'HTTPNotFound', `File "${String(uri)}" not found`);
        }
        const sandbox = (body.options as { sandbox?: { enabled?: unknown; image_id?: unknown } } | undefined)
          ?.sandbox;
        if (sandbox?.enabled === true && typeof sandbox.image_id !== 'string') {
          return envelopeError(res, 400, 'ValidationError', 'image_id is required for behavioural analysis');
        }
        const fileName = typeof body.file_name === 'string' ? body.file_name : undefined;
        const task = newTask('analysis', ctx.token, file.bytes, fileName);
        if (body.async_result === true) return sendData(res, { scan_id: task.scanId });
        await waitReady(task);
        sendData(res, { scan_id: task.scanId, result: resultJson(task) });
      },
    },
    'analysis/checkTask': {
      methods: ['POST'],
      family: 'analysis',
      handle: (req, res, ctx) => pollTask(req, res, ctx, 'analysis'),
    },
    'analysis/report': {
      methods: ['POST'],
      family: 'analysis',
      handle: (req, res, ctx) => report(req, res, ctx, 'analysis'),
    },
    'scan/checkFile': {
      methods: ['POST'],
      family: 'source',
      handle: async (req, res, ctx) => {
        checkFileQueries.push(ctx.url.searchParams);
        const bytes = await readUpload(req, res, ctx.endpoint);
        if (bytes === undefined) return;
        const q = ctx.url.searchParams;
        for (const v of q.values())
          if (v === 'null') return envelopeError(res, 400, 'ValidationError', 'null is not allowed');
        const pw = q.get('passwords_for_unpack');
        if (pw !== null) {
          try {
            if (!Array.isArray(JSON.parse(pw))) throw new Error('not a list');
          } catch {
            return envelopeError(res, 400, 'ValidationError', 'passwords_for_unpack must be a JSON list');
          }
        }
        const task = newTask('source', ctx.token, bytes, q.get('file_name') ?? undefined);
        if (q.get('async_result') === 'true') return sendData(res, { scan_id: task.scanId });
        await waitReady(task);
        sendData(res, { scan_id: task.scanId, result: resultJson(task) });
      },
    },
    'scan/getStatus': {
      methods: ['POST'],
      family: 'source',
      handle: (req, res, ctx) => pollTask(req, res, ctx, 'source'),
    },
    'scan/getFullReport': {
      methods: ['POST'],
      family: 'source',
      handle: (req, res, ctx) => report(req, res, ctx, 'source'),
    },
    'maintenance/checkHealth': {
      methods: ['GET', 'POST'],
      handle: (_q, res) => sendData(res, { status: 'OK' }),
    },
    'maintenance/getVersion': {
      methods: ['GET', 'POST'],
      handle: async (_q, res) => {
        const b = versionBehaviour;
        if (b?.delayMs !== undefined) await waitUntil(Date.now() + b.delayMs);
        if (res.destroyed) return;
        if (b?.status !== undefined) return plain(res, b.status, 'Internal Server Error');
        sendData(res, { version, edition: '' });
      },
    },
    'engines/sandbox/getImages': {
      methods: ['GET', 'POST'],
      handle: (_q, res) =>
        sendData(res, [
          {
            image_id: 'win10-1607-x64',
            version: '1',
            type: 'vm',
            os: { name: 'Windows', version: '10', architecture: 'x64' },
          },
          {
            image_id: 'ubuntu-jammy-x64',
            version: '1',
            type: 'vm',
            os: { name: 'Ubuntu', version: '22.04', architecture: 'x64' },
          },
        ]),
    },
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const endpoint = url.pathname.replace(/^\/api\/v1\//, '');
      counters[endpoint] = (counters[endpoint] ?? 0) + 1;
      const failure = failures.find(
        (f) => f.remaining > 0 && (f.endpoint === undefined || f.endpoint === endpoint),
      );
      if (failure !== undefined) {
        failure.remaining--;
        await drain(req);
        return plain(res, failure.status, '<html><body>Service Temporarily Unavailable</body></html>');
      }
      const route = url.pathname.startsWith('/api/v1/') ? routes[endpoint] : undefined;
      if (route === undefined) {
        await drain(req);
        return envelopeError(res, 404, 'HTTPNotFound', '404: Not Found');
      }
      if (!route.methods.includes(req.method ?? '')) {
        await drain(req);
        return envelopeError(res, 405, 'HTTPMethodNotAllowed', '405: Method Not Allowed');
      }
      const header = req.headers['x-api-key'];
      const token = typeof header === 'string' ? header : undefined;
      const perms = token !== undefined ? tokens[token] : undefined;
      if (token === undefined || perms === undefined) {
        await drain(req);
        return plain(res, 401, 'Authorization required');
      }
      if (route.family !== undefined && !perms.includes(route.family)) {
        await drain(req);
        return envelopeError(
          res,
          403,
          'HTTPForbidden',
          'Access denied: the token lacks the permission for this action',
        );
      }
      const refused = SUBMISSIONS.has(endpoint) ? refusal() : undefined;
      if (refused !== undefined) {
        refusedCount++;
        await drain(req);
        if (refused.retryAfterSec !== undefined) res.setHeader('retry-after', String(refused.retryAfterSec));
        return refused.status === 429
          ? envelopeError(res, 429, 'HTTPTooManyRequests', '429: Too Many Requests')
          : plain(res, 503, '<html><body>Service Temporarily Unavailable</body></html>');
      }
      await route.handle(req, res, { token, url, endpoint });
    })().catch((err: unknown) => {
      if (!res.headersSent) envelopeError(res, 500, 'InternalError', String(err));
      else res.destroy();
    });
  };
  const server: Server = options.tls
    ? createTlsServer({ key: options.tls.key, cert: options.tls.cert }, handler)
    : createServer(handler);

  const readUpload = async (
    req: IncomingMessage,
    res: ServerResponse,
    endpoint: string,
  ): Promise<Buffer | undefined> => {
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    if (te !== undefined && /chunked/i.test(te)) {
      await drain(req);
      uploads.push({ endpoint, contentLength: cl, transferEncoding: te, size: 0, refused: 411 });
      envelopeError(res, 411, 'HTTPLengthRequired', 'chunked transfer encoding is not supported');
      return undefined;
    }
    if (cl !== undefined && Number(cl) > maxUpload) {
      await drain(req);
      uploads.push({ endpoint, contentLength: cl, transferEncoding: te, size: Number(cl), refused: 413 });
      envelopeError(res, 413, 'HTTPRequestEntityTooLarge', 'Request Entity Too Large');
      return undefined;
    }
    const bytes = await readBody(req);
    uploads.push({ endpoint, contentLength: cl, transferEncoding: te, size: bytes.length });
    return bytes;
  };

  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    counters,
    uploads,
    createBodies,
    checkFileQueries,
    tasks,
    tasksCreated: () => tasks.size,
    foreignTokenReads: () => foreignReads,
    failNext(count, opts = {}) {
      failures.push({
        remaining: count,
        status: opts.status ?? 503,
        ...(opts.endpoint !== undefined ? { endpoint: opts.endpoint } : {}),
      });
    },
    forgetTasks() {
      tasks.clear();
      waiting.length = 0;
    },
    setTaskDuration(ms) {
      taskDuration = ms;
    },
    finishAll() {
      const now = Date.now();
      for (const t of tasks.values()) {
        t.startedAt ??= now;
        t.readyAt = Math.min(t.readyAt, now);
      }
      waiting.length = 0;
    },
    refuseSubmissions(statusCode, opts = {}) {
      refusing =
        statusCode === undefined
          ? undefined
          : {
              status: statusCode,
              ...(opts.retryAfterSec !== undefined ? { retryAfterSec: opts.retryAfterSec } : {}),
            };
    },
    setVersionBehaviour(behaviour) {
      versionBehaviour = behaviour;
    },
    setVersion(v) {
      version = v;
    },
    load() {
      let uncollected = 0;
      for (const t of tasks.values()) if (t.collectedAt === undefined) uncollected++;
      return { running, queued: waiting.length, uncollected, maxRunning, maxQueued, refused: refusedCount };
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Endpoints that submit work: refused under overload. */
const SUBMISSIONS = new Set(['storage/uploadScanFile', 'analysis/createScanTask', 'scan/checkFile']);

function resultJson(task: FakeTask): Record<string, unknown> {
  const r = task.result;
  return {
    scan_state: r.scan_state,
    ...(r.verdict !== undefined ? { verdict: r.verdict } : {}),
    threat: r.threat,
    duration: 0.18,
    duration_full: 0.21,
    errors: r.errors,
  };
}

function reportTree(task: FakeTask): unknown[] {
  const child = {
    type: 'FILE',
    result: resultJson(task),
    file_info: {
      file_path: task.fileName ?? '',
      mime_type: 'application/octet-stream',
      size: task.bytes.length,
    },
    engine_results: [
      {
        engine_subsystem: 'STATIC',
        engine_code_name: 'ptesc',
        result: resultJson(task),
        detections: task.result.detections.map((d) => ({ detect: d, threat: d })),
      },
    ],
    artifacts: [],
  };
  return [
    {
      type: 'EMAIL',
      result: resultJson(task),
      file_info: { file_path: '' },
      engine_results: [],
      artifacts: [child],
    },
  ];
}

function hasNull(value: unknown): boolean {
  if (value === null) return true;
  if (Array.isArray(value)) return value.some(hasNull);
  if (typeof value === 'object') return Object.values(value).some(hasNull);
  return false;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function drain(req: IncomingMessage): Promise<void> {
  for await (const _ of req as AsyncIterable<Buffer>) void _;
}

async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  const text = (await readBody(req)).toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    envelopeError(res, 400, 'ValidationError', 'the body is not JSON');
    return undefined;
  }
  if (body === null || typeof body !== 'object') {
    envelopeError(res, 400, 'ValidationError', 'the body must be an object');
    return undefined;
  }
  if (hasNull(body)) {
    envelopeError(res, 400, 'ValidationError', 'null values are not allowed');
    return undefined;
  }
  return body;
}

function sendData(res: ServerResponse, data: unknown): void {
  const text = JSON.stringify({ data, errors: [] });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function envelopeError(res: ServerResponse, status: number, type: string, message: string): void {
  const text = JSON.stringify({ data: {}, errors: [{ type, message }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function waitUntil(at: number): Promise<void> {
  const ms = at - Date.now();
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

/** Waits until a task's result is ready (it may still be queued for a slot). */
async function waitReady(task: FakeTask): Promise<void> {
  while (Date.now() < task.readyAt) {
    await waitUntil(Math.min(task.readyAt, Date.now() + 50));
  }
}
