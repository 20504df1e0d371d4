/**
 * The one place errors become HTTP: RFC 7807 problem+json with a stable error_code. Details are the
 * SidecarError's safe detail; anything unexpected becomes a generic internal_error.
 */
import type { ServerResponse } from 'node:http';
import { ERROR_CATALOGUE, type ErrorCode, isSidecarError, SidecarError } from '../errors.js';

export function toSidecarError(err: unknown): SidecarError {
  if (isSidecarError(err)) return err;
  return new SidecarError('internal_error', 'the sidecar could not handle this request', { cause: err });
}

export function problemBody(code: ErrorCode, detail: string, requestId: string, instance?: string): string {
  const c = ERROR_CATALOGUE[code];
  return JSON.stringify({
    type: `urn:agentwrit-sidecar:error:${code}`,
    title: c.title,
    status: c.status,
    detail,
    ...(instance !== undefined ? { instance } : {}),
    error_code: code,
    request_id: requestId,
  });
}

export function sendProblem(res: ServerResponse, err: SidecarError, requestId: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = problemBody(err.code, err.detail, requestId);
  const headers: Record<string, string | number> = {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  };
  // A body not read to its end (too large, stalled, or refused before it came) is not read now: the
  // connection closes after this answer rather than wait for the rest before the next request.
  const req = res.req;
  if (req && !req.readableEnded && (req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0')) {
    res.shouldKeepAlive = false;
  }
  if (err.code === 'token_required') headers['proxy-authenticate'] = 'Bearer realm="agentwrit-sidecar", Basic realm="agentwrit-sidecar"';
  if (err.code === 'token_missing' || err.status === 401) headers['www-authenticate'] = 'Bearer realm="agentwrit-sidecar"';
  res.writeHead(err.status, headers);
  res.end(body);
}
