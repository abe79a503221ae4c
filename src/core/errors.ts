/**
 * One error class for everything sandgate raises on purpose. Branch on `code`, never on message text.
 * docs/errors.md lists every code; test/unit/core/errors.test.ts fails when the two disagree.
 */
export const ErrorCodes = {
  ERR_CONFIG_INVALID: 'the configuration failed validation; the message names the path',
  ERR_CONFIG_FILE: 'the configuration file could not be read or parsed',
  ERR_SECRET_FILE: 'a secret file named in the configuration could not be read',
  ERR_INPUT_NOT_FOUND: 'the message file to scan does not exist or cannot be read',
  ERR_MESSAGE_TOO_LARGE: 'the message exceeds the configured size limit',
  ERR_MESSAGE_MALFORMED: 'the message or its envelope could not be parsed',
  ERR_SCANNER_TIMEOUT: 'a scanner did not answer within the message deadline',
  ERR_SCANNER_UNAVAILABLE: 'a scanner could not be reached or refused our credentials',
  ERR_SCANNER_PROTOCOL: 'a scanner answered something we do not understand',
  ERR_SCANNER_TOO_LARGE: 'a scanner refused the content as too large',
  ERR_SCANNER_ENCRYPTED: 'content is encrypted and could not be inspected',
  ERR_SCANNER_INTERNAL: 'a scanner failed in an unexpected way',
  ERR_STATE_DB: 'the state database could not be opened or migrated',
  ERR_STATE_ARCHIVE: 'a state export file is not a complete, intact sandgate state export',
  ERR_STATE_ARCHIVE_VERSION: 'a state export file has a format version this build does not read',
  ERR_STATE_AUTH: 'the PostgreSQL state database refused our user or password',
  ERR_STATE_TLS: "the PostgreSQL state database's TLS certificate did not verify, or it does not speak TLS",
  ERR_QUARANTINE_WRITE: 'a message could not be written to the quarantine',
  ERR_QUARANTINE_NOT_FOUND: 'no quarantine item has that id',
  ERR_QUARANTINE_RELEASE: 'a quarantine item could not be released; it stays in the quarantine',
  ERR_SPOOL_WRITE: 'a message could not be written to the spool',
  ERR_QUEUE_NOT_FOUND: 'no relay queue item has that id',
  ERR_ABORTED: 'the operation was aborted',
  ERR_NEXT_HOP_UNAVAILABLE: 'the relay could not reach the next hop, or it refused our session',
  ERR_NEXT_HOP_PROTOCOL: 'the next hop answered something that is not SMTP',
  ERR_DELIVERY_REFUSED: 'the delivery target refused the message or every recipient',
  ERR_BAD_REQUEST: 'a command-line value or an admin API request is malformed; the message names it',
  ERR_UNAUTHORISED: 'an admin API request without a valid bearer token',
  ERR_MILTER_PROTOCOL: 'the MTA sent a milter packet that is malformed, oversized or out of order',
  ERR_MARK_KEY_MISMATCH: 'the X-Sandgate-Mark key differs from the one recorded in the shared state',
  ERR_PT_TOKEN_MISMATCH:
    'the PT Sandbox token differs from the one of tasks that running processes on the shared state poll',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export type ErrorDetails = Readonly<Record<string, string | number | boolean | null | undefined>>;

export class SandgateError extends Error {
  override readonly name = 'SandgateError';
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

export function isSandgateError(err: unknown, code?: ErrorCode): err is SandgateError {
  return (
    err instanceof Error &&
    (err as Partial<SandgateError>).name === 'SandgateError' &&
    typeof (err as Partial<SandgateError>).code === 'string' &&
    (code === undefined || (err as SandgateError).code === code)
  );
}

/**
 * An error for a person to read (a command's stderr line, a log field): the message, and the code
 * in brackets for ours (`cannot read x.eml: no such file [ERR_INPUT_NOT_FOUND]`).
 */
export function describeError(err: unknown): string {
  if (isSandgateError(err)) return `${err.message} [${err.code}]`;
  return err instanceof Error ? err.message : String(err);
}
