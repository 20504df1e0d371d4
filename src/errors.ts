/**
 * Typed errors with a stable code. Every refusal the sidecar makes is one of these codes, mapped to
 * an HTTP status here and nowhere else (see pipeline/respond.ts for the problem+json body).
 */
export const ERROR_CATALOGUE = {
  token_required: { status: 407, title: 'Proxy Authentication Required' },
  token_missing: { status: 401, title: 'Unauthorized' },
  token_invalid: { status: 401, title: 'Unauthorized' },
  token_expired: { status: 401, title: 'Unauthorized' },
  token_revoked: { status: 401, title: 'Unauthorized' },
  scope_violation: { status: 403, title: 'Forbidden' },
  delegation_too_deep: { status: 403, title: 'Forbidden' },
  no_route: { status: 403, title: 'Forbidden' },
  tunnel_refused: { status: 403, title: 'Forbidden' },
  bad_request: { status: 400, title: 'Bad Request' },
  ambiguous_request: { status: 400, title: 'Bad Request' },
  payload_too_large: { status: 413, title: 'Payload Too Large' },
  request_timeout: { status: 408, title: 'Request Timeout' },
  expectation_failed: { status: 417, title: 'Expectation Failed' },
  headers_too_large: { status: 431, title: 'Request Header Fields Too Large' },
  upstream_unreachable: { status: 502, title: 'Bad Gateway' },
  upstream_tls_error: { status: 502, title: 'Bad Gateway' },
  upstream_timeout: { status: 504, title: 'Gateway Timeout' },
  broker_unavailable: { status: 503, title: 'Service Unavailable' },
  connector_unavailable: { status: 503, title: 'Service Unavailable' },
  audit_unavailable: { status: 503, title: 'Service Unavailable' },
  not_ready: { status: 503, title: 'Service Unavailable' },
  shutting_down: { status: 503, title: 'Service Unavailable' },
  internal_error: { status: 500, title: 'Internal Server Error' },
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export class SidecarError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Safe to show to the agent: never contains a token, secret, or the policy. */
  readonly detail: string;

  constructor(code: ErrorCode, detail: string, options?: { cause?: unknown }) {
    super(`${code}: ${detail}`, options);
    this.name = 'SidecarError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.detail = detail;
  }
}

export function isSidecarError(e: unknown): e is SidecarError {
  return e instanceof SidecarError;
}

/** A problem found while loading configuration: always carries where it is. */
export interface ConfigProblem {
  file: string;
  line: number;
  col: number;
  message: string;
}

export class ConfigError extends Error {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** What went wrong, short: the errno code when there is one (ENOENT, EACCES, ...), else the message. */
export function errorReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code) return code;
  return e instanceof Error ? e.message : String(e);
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.col} ${p.message}`;
}
