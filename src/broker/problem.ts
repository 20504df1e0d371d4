/**
 * RFC 7807 problem details as the broker writes them: `type` urn:agentwrit:error:<code>, Go's
 * status text as `title`, `instance` = request path, `error_code` = the same code, `request_id`.
 */
import { goJson } from './gojson.js';

export type BrokerErrorCode =
  | 'invalid_request'
  | 'invalid_ttl'
  | 'unauthorized'
  | 'forbidden'
  | 'insufficient_scope'
  | 'scope_violation'
  | 'not_found'
  | 'payload_too_large'
  | 'rate_limited'
  | 'internal_error';

/** Go's net/http StatusText for every status the broker answers with. */
export const GO_STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  301: 'Moved Permanently',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  413: 'Request Entity Too Large',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
};

export class Problem extends Error {
  override name = 'Problem';
  constructor(
    readonly status: number,
    readonly code: BrokerErrorCode,
    readonly detail: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(`${code}: ${detail}`);
  }
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export function problemReply(p: Problem, path: string, requestId: string): Reply {
  const body: Record<string, unknown> = {
    type: `urn:agentwrit:error:${p.code}`,
    title: GO_STATUS_TEXT[p.status] ?? '',
    status: p.status,
    detail: p.detail,
    instance: path,
    error_code: p.code,
  };
  if (requestId) body.request_id = requestId;
  return {
    status: p.status,
    headers: { 'Content-Type': 'application/problem+json', ...p.headers },
    body: `${goJson(body)}\n`,
  };
}

/** JSON as Go's json.Encoder writes it (HTML-safe escaping, trailing newline). */
export function jsonReply(status: number, value: unknown): Reply {
  return { status, headers: { 'Content-Type': 'application/json' }, body: `${goJson(value)}\n` };
}

export const badRequest = (detail: string) => new Problem(400, 'invalid_request', detail);
export const unauthorized = (detail: string) => new Problem(401, 'unauthorized', detail);
export const internalError = (detail: string) => new Problem(500, 'internal_error', detail);
