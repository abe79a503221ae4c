import { createHash, timingSafeEqual } from 'node:crypto';
import { isSandgateError, SandgateError } from '../core/errors.js';
import { parseSince } from '../config/durations.js';
import type { Logger } from '../core/logger.js';
import type { QuarantineFilter, QuarantineItem } from '../core/state-records.js';
import { cleanText } from '../quarantine/display.js';
import type { QuarantineService } from '../quarantine/service.js';
import { headerBytesToText } from '../mime/header-text.js';
import { QUARANTINE_PAGE } from './quarantine-page.js';
import type { AdminHandler, AdminRequest, AdminResponse, AdminRoute } from './server.js';

/** Anything with the AdminServer's `route()`. */
export interface RouteTable {
  route(r: AdminRoute): void;
}

export interface QuarantineRoutesOptions {
  readonly service: QuarantineService;
  /** The bearer token; undefined refuses every API request. */
  readonly token: string | undefined;
  readonly log: Logger;
}

const MAX_BODY = 64 * 1024;

/** The page's one inline script, allowed by its hash: nothing else may run on the page. */
const PAGE_SCRIPT_HASH = `sha256-${createHash('sha256')
  .update(/<script>([\s\S]*?)<\/script>/.exec(QUARANTINE_PAGE)?.[1] ?? '', 'utf8')
  .digest('base64')}`;

/**
 * The quarantine API (JSON, bearer token required) and the operator page:
 *   GET    /quarantine                       the page (static; it asks for the token and calls the API)
 *   GET    /api/quarantine?since&verdict&sender&rcpt&subject&released&limit   list
 *   GET    /api/quarantine/item?id=ID        show (headers, verdict, attachments)
 *   DELETE /api/quarantine/item?id=ID        delete
 *   POST   /api/quarantine/release           {"id", "to"?: [addresses], "allowHash"?: bool, "by"?: name}
 */
export function quarantineRoutes(options: QuarantineRoutesOptions): AdminRoute[] {
  const { service, log } = options;
  const expected = options.token !== undefined ? digest(options.token) : undefined;
  const guarded =
    (handler: (req: AdminRequest) => Promise<AdminResponse> | AdminResponse): AdminHandler =>
    async (req) => {
      if (!authorised(req, expected)) {
        log.warn(
          { event: 'admin.unauthorised', path: req.url.pathname },
          'admin request without a valid token',
        );
        return {
          ...json(401, { error: 'unauthorised', code: 'ERR_UNAUTHORISED' }),
          headers: { ...JSON_HEADERS, 'www-authenticate': 'Bearer' },
        };
      }
      try {
        return await handler(req);
      } catch (err) {
        return errorResponse(err);
      }
    };
  return [
    {
      method: 'GET',
      path: '/quarantine',
      handler: () => ({
        status: 200,
        headers: {
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': `default-src 'none'; script-src '${PAGE_SCRIPT_HASH}'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'`,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
        },
        body: QUARANTINE_PAGE,
      }),
    },
    {
      method: 'GET',
      path: '/api/quarantine',
      handler: guarded(async (req) =>
        json(200, { items: (await service.list(filterFrom(req.url.searchParams))).map(summary) }),
      ),
    },
    {
      method: 'GET',
      path: '/api/quarantine/item',
      handler: guarded(async (req) => json(200, await service.show(idFrom(req.url.searchParams.get('id'))))),
    },
    {
      method: 'DELETE',
      path: '/api/quarantine/item',
      handler: guarded(async (req) => {
        const item = await service.delete(idFrom(req.url.searchParams.get('id')), byFrom(req, undefined));
        return json(200, { deleted: item.id });
      }),
    },
    {
      method: 'POST',
      path: '/api/quarantine/release',
      handler: guarded(async (req) => {
        const body = await readJson(req);
        const id = idFrom(typeof body.id === 'string' ? body.id : null);
        const to = body.to;
        if (
          to !== undefined &&
          (!Array.isArray(to) || !to.every((a) => typeof a === 'string' && /^[^\s<>]+@[^\s<>]+$/.test(a)))
        ) {
          return json(400, { error: '"to" must be a list of addresses', code: 'ERR_BAD_REQUEST' });
        }
        const result = await service.release(id, {
          by: byFrom(req, typeof body.by === 'string' ? body.by : undefined),
          ...(to !== undefined ? { to: to as string[] } : {}),
          allowHash: body.allowHash === true,
        });
        return json(200, result);
      }),
    },
  ];
}

/** Registers the quarantine routes on an admin server's route table. */
export function registerQuarantineRoutes(table: RouteTable, options: QuarantineRoutesOptions): void {
  for (const r of quarantineRoutes(options)) table.route(r);
}

export function summary(item: QuarantineItem) {
  return {
    id: item.id,
    createdAt: new Date(item.createdAt).toISOString(),
    frontEnd: item.envelope.frontEnd,
    sender: item.envelope.sender,
    recipients: item.envelope.recipients,
    /** Decoded for display (RFC 2047 words in their charsets); subjectRaw is the header as written. */
    subject: cleanText(item.subjectText ?? ''),
    subjectRaw:
      item.subject !== undefined ? cleanText(headerBytesToText(Buffer.from(item.subject, 'latin1'))) : '',
    verdict: item.verdict,
    action: item.action,
    reason: item.reason,
    threats: item.threats,
    size: item.size,
    ...(item.releasedAt !== undefined
      ? {
          releasedAt: new Date(item.releasedAt).toISOString(),
          releasedBy: item.releasedBy,
          releasedTo: item.releasedTo,
        }
      : {}),
  };
}

const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8' };

function json(status: number, body: unknown): AdminResponse {
  return { status, headers: JSON_HEADERS, body: JSON.stringify(body) };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time: both sides are hashed to the same length before timingSafeEqual. */
function authorised(req: AdminRequest, expected: Buffer | undefined): boolean {
  if (expected === undefined) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m) return false;
  return timingSafeEqual(digest(m[1]!), expected);
}

function errorResponse(err: unknown): AdminResponse {
  if (isSandgateError(err)) {
    const status =
      err.code === 'ERR_QUARANTINE_NOT_FOUND'
        ? 404
        : err.code === 'ERR_QUARANTINE_RELEASE'
          ? 502
          : err.code === 'ERR_BAD_REQUEST'
            ? 400
            : 500;
    return json(status, { error: err.message, code: err.code });
  }
  throw err;
}

function idFrom(id: string | null): string {
  if (id === null || !/^[\w.-]{1,100}$/.test(id)) {
    throw new SandgateError('ERR_QUARANTINE_NOT_FOUND', `no quarantine item "${id ?? ''}"`, {
      details: { id: id ?? '' },
    });
  }
  return id;
}

function byFrom(req: AdminRequest, name: string | undefined): string {
  const who = name !== undefined ? name.replace(/[^\w.@ -]/g, '').slice(0, 64) : '';
  return `admin-api${who ? `:${who}` : ''}@${req.raw.socket.remoteAddress ?? 'unknown'}`;
}

function filterFrom(q: URLSearchParams): QuarantineFilter {
  const since = q.get('since');
  const released = q.get('released');
  const limit = q.get('limit');
  const filter: { -readonly [K in keyof QuarantineFilter]: QuarantineFilter[K] } = {};
  if (since) filter.since = parseSince(since, Date.now(), 'since');
  if (q.get('verdict')) filter.verdict = q.get('verdict')!;
  if (q.get('sender')) filter.sender = q.get('sender')!;
  if (q.get('rcpt')) filter.recipient = q.get('rcpt')!;
  if (q.get('subject')) filter.subject = q.get('subject')!;
  if (released === 'true' || released === 'false') filter.released = released === 'true';
  if (limit && /^\d+$/.test(limit)) filter.limit = Number(limit);
  return filter;
}

async function readJson(req: AdminRequest): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req.raw as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > MAX_BODY)
      throw new SandgateError('ERR_BAD_REQUEST', `request body larger than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  if (n === 0) return {};
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (cause) {
    throw new SandgateError('ERR_BAD_REQUEST', 'request body is not a JSON object', { cause });
  }
}
