/**
 * What an ICAP exchange means, pure (docs/icap.md, "What each answer becomes"):
 *
 * - infected: an infection header on any final answer (X-Infection-Found, X-Virus-ID,
 *   X-Violations-Found with a count above 0, X-Blocked, X-Blocked-Reason, X-Response-Info: Blocked,
 *   the configured list); or a 200 whose encapsulated HTTP answer is not 2xx (a block page), or
 *   that carries a body other than the one sent (a replaced body);
 * - clean: ONLY a 204 once the service has had the whole content (or decided on the preview), or a
 *   200 whose encapsulated body is complete and byte-identical to what was sent;
 * - anything else: failed, never clean. 5xx and a connection closed before any answer let the
 *   scanner try the next server.
 */
import type { FailureReason, Finding, FindingDetails } from '../../core/outcome.js';
import type { ExchangeResult } from './connection.js';
import { printable, unfold, type IcapHeaders, type IcapMethod } from './protocol.js';

/** Threat names reported without a name from the service. Stable, documented in docs/icap.md. */
export const IcapThreats = {
  /** An infection header without a usable name. */
  infection: 'ICAP.Infection',
  /** A block page: the encapsulated HTTP answer is not 2xx (c-icap: 403 with "VIRUS FOUND"). */
  blocked: 'ICAP.Blocked',
  /** The service sent back other content than we sent, without an infection header. */
  replaced: 'ICAP.ContentReplaced',
} as const;

const MAX_THREATS = 20;

export interface Infection {
  /** X-Infection-Found Type=1 (policy) or 2 (container) alone makes it suspicious; anything else malicious. */
  readonly kind: 'malicious' | 'suspicious';
  readonly threats: readonly string[];
  /** The header names that said so, lower case. */
  readonly headers: readonly string[];
}

/** Threat names end up in logs, SMTP replies and headers: printable ASCII without spaces, bounded. */
export function threatName(raw: string): string {
  return raw
    .trim()
    .replace(/[^\x21-\x7e]+/g, '_')
    .slice(0, 120);
}

const NEGATIVE = new Set(['', '0', 'no', 'false', 'none', 'off']);

/** The infection a response's headers report, if any. `extra`: configured header names, lower case. */
export function infectionFrom(headers: IcapHeaders, extra: readonly string[] = []): Infection | undefined {
  const threats = new Set<string>();
  const seen = new Set<string>();
  let malicious = false;
  const add = (name: string | undefined, header: string): void => {
    seen.add(header);
    const t = name === undefined ? '' : threatName(name);
    if (t !== '' && threats.size < MAX_THREATS) threats.add(t);
  };

  for (const h of headers.all('X-Infection-Found')) {
    const value = unfold(h);
    const type = /(?:^|;)\s*Type\s*=\s*(\d+)/i.exec(value)?.[1];
    if (type !== '1' && type !== '2') malicious = true;
    const threat = /(?:^|;)\s*Threat\s*=\s*([^;]*)/i.exec(value)?.[1];
    // Kaspersky lists several threats in one Threat=, separated by commas.
    const names = (threat ?? '').split(',').filter((s) => s.trim() !== '');
    if (names.length === 0) add(IcapThreats.infection, 'x-infection-found');
    for (const n of names) add(n, 'x-infection-found');
  }
  for (const h of headers.all('X-Virus-ID')) {
    const v = unfold(h);
    if (NEGATIVE.has(v.toLowerCase())) continue;
    malicious = true;
    add(v, 'x-virus-id');
  }
  for (const h of headers.all('X-Violations-Found')) {
    const count = /^\s*(\d+)\s*$/.exec(h.value)?.[1];
    if (count === '0') continue;
    malicious = true;
    // draft-stecher-icap-subid 4.6: four folded lines per item: file, threat, problem id, resolution.
    const names: string[] = [];
    for (let i = 1; i < h.continuation.length; i += 4) {
      const n = h.continuation[i];
      if (n !== undefined && n !== '' && n !== '-') names.push(n);
    }
    if (names.length === 0) add(IcapThreats.infection, 'x-violations-found');
    for (const n of names) add(n, 'x-violations-found');
  }
  for (const name of ['X-Blocked', 'X-Blocked-Reason']) {
    for (const h of headers.all(name)) {
      const v = unfold(h);
      if (NEGATIVE.has(v.toLowerCase())) continue;
      malicious = true;
      add(/^(yes|true|1)$/i.test(v) ? IcapThreats.blocked : v, name.toLowerCase());
    }
  }
  for (const h of headers.all('X-Response-Info')) {
    if (unfold(h).toLowerCase() !== 'blocked') continue;
    malicious = true;
    add(headers.get('X-Response-Desc') ?? IcapThreats.blocked, 'x-response-info');
  }
  for (const name of extra) {
    for (const h of headers.all(name)) {
      const v = unfold(h);
      if (NEGATIVE.has(v.toLowerCase())) continue;
      malicious = true;
      add(v, name.toLowerCase());
    }
  }
  if (seen.size === 0) return undefined;
  if (threats.size === 0) threats.add(IcapThreats.infection);
  return { kind: malicious ? 'malicious' : 'suspicious', threats: [...threats], headers: [...seen] };
}

/** What the scanner does with one exchange: a finding, or try the next server. */
export type Mapped =
  | { readonly kind: 'finding'; readonly finding: Finding }
  | { readonly kind: 'next-server'; readonly reason: FailureReason; readonly message: string };

export interface MapInput {
  readonly result: ExchangeResult;
  readonly method: IcapMethod;
  /** Bytes of the content sent. */
  readonly size: number;
  /** Configured extra infection headers, lower case. */
  readonly infectionHeaders: readonly string[];
  /** Attached to every finding (server, ISTag). */
  readonly details?: FindingDetails;
}

export function mapExchange(input: MapInput): Mapped {
  const { result: r } = input;
  const status = r.head?.status;
  const details: Record<string, string | number | boolean> = { ...input.details };
  if (status !== undefined) details.status = status;
  const failed = (reason: FailureReason, message: string): Mapped => ({
    kind: 'finding',
    finding: { kind: 'failed', reason, message, details },
  });

  if (r.head !== undefined && status !== undefined && status >= 200) {
    const infection = infectionFrom(r.head.headers, input.infectionHeaders);
    if (infection !== undefined) {
      details.infectionHeaders = infection.headers.join(',');
      return { kind: 'finding', finding: { kind: infection.kind, threats: infection.threats, details } };
    }
  }

  switch (r.ended) {
    case 'timeout':
      return failed('timeout', `no complete ICAP answer in time (${r.detail ?? 'waiting'})`);
    case 'aborted':
      return failed('timeout', 'aborted while waiting for the ICAP server');
    case 'source-failed':
      return failed('internal', `could not read the content to send: ${r.detail ?? 'error'}`);
    case 'protocol':
      return failed('protocol', `ICAP answer not understood: ${r.detail ?? 'malformed'}`);
    case 'closed':
      if (r.head === undefined) {
        return {
          kind: 'next-server',
          reason: 'unavailable',
          message: `closed the connection without an answer (${r.detail ?? 'EOF'})`,
        };
      }
      return failed(
        'protocol',
        `closed the connection in the middle of its ${status} answer (${r.detail ?? 'EOF'})`,
      );
    case 'complete':
      break;
  }
  const head = r.head;
  if (head === undefined || status === undefined) return failed('protocol', 'no ICAP answer');
  const reason = printable(head.reason, 80);
  switch (status) {
    case 204:
      // Outside a preview, a 204 before the service had everything means it did not scan it all.
      if (!r.sentAll && r.preview?.answered !== true) {
        return failed('protocol', 'answered 204 before it had received the whole content');
      }
      return { kind: 'finding', finding: { kind: 'clean', details } };
    case 200:
      return map200(input, details, failed);
    case 400:
      return failed('protocol', `answered 400 ${reason}: it did not understand our request`);
    case 404:
      return failed(
        'protocol',
        `answered 404 ${reason}: no such ICAP service; check the service path in scanners.icap.servers`,
      );
    case 405:
      return failed(
        'protocol',
        `answered 405 ${reason}: the service does not allow ${input.method}; set scanners.icap.method`,
      );
    case 408:
      return failed('timeout', `answered 408 ${reason}: it timed out waiting for our request`);
    case 501:
    case 505:
      return failed('protocol', `answered ${status} ${reason}: it does not support our request`);
    default:
      if (status >= 500 && status <= 599) {
        return { kind: 'next-server', reason: 'unavailable', message: `answered ${status} ${reason}` };
      }
      return failed('protocol', `unexpected ICAP status ${status} ${reason}`);
  }
}

function map200(
  input: MapInput,
  details: Record<string, string | number | boolean>,
  failed: (reason: FailureReason, message: string) => Mapped,
): Mapped {
  const r = input.result;
  const enc = r.encapsulated;
  if (enc === undefined) return failed('protocol', '200 without an Encapsulated header');
  const resHead = r.httpHeads.find((h) => h.section === 'res-hdr')?.http;
  const blocked = (threat: string): Mapped => ({
    kind: 'finding',
    finding: { kind: 'malicious', threats: [threat], details },
  });
  if (resHead?.status !== undefined) details.httpStatus = resHead.status;
  // REQMOD answered with an HTTP response: the service refused to let the request through.
  if (input.method === 'REQMOD' && resHead !== undefined) return blocked(IcapThreats.blocked);
  if (resHead?.status !== undefined && (resHead.status < 200 || resHead.status > 299)) {
    return blocked(IcapThreats.blocked);
  }
  const expected = input.method === 'RESPMOD' ? 'res-body' : 'req-body';
  const bodyName = enc.body.name;
  if (bodyName !== expected && bodyName !== 'null-body') {
    return failed('protocol', `200 with ${bodyName} in answer to ${input.method}`);
  }
  const comparison =
    bodyName === 'null-body' ? (input.size === 0 ? 'identical' : 'prefix') : r.body.comparison;
  details.bytesReturned = r.body.bytes;
  switch (comparison) {
    case 'identical':
      return { kind: 'finding', finding: { kind: 'clean', details } };
    case 'differs':
      return blocked(IcapThreats.replaced);
    case 'prefix':
      return failed(
        'protocol',
        `answered 200 with ${r.body.bytes} of ${input.size} bytes and no infection header: the service sent part of the content before it finished scanning (c-icap: SendPercentData outside mode=simple; use the avscan service)`,
      );
    case undefined:
      return failed('protocol', '200 whose body was not compared');
  }
}
