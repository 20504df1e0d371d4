/**
 * The HTTP front of the broker, with its middleware in the broker's order (outermost first):
 * request id → logging → 1 MiB body limit → security headers → router. Because the body limit sits
 * outside the security headers, a 413 carries X-Request-ID but not the security headers.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { BrokerContext } from './context.js';
import { type BrokerRequest, clientIp, type Handler } from './http.js';
import { GO_STATUS_TEXT, Problem, problemReply, type Reply } from './problem.js';
import { cleanPath, parseTarget, type Router } from './router.js';

export const MAX_BODY_BYTES = 1024 * 1024;

const SECURITY_HEADERS: Record<string, string> = {
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
  'X-Frame-Options': 'DENY',
};
/** Added by the broker only when it serves TLS (AA_TLS_MODE tls or mtls). */
const HSTS = 'max-age=63072000; includeSubDomains';

/**
 * The broker's AA_TLS_MODE (reference §1.1): `tls` serves HTTPS with the given certificate, `mtls`
 * also requires a client certificate signed by clientCa. TLS 1.2 or later, AEAD suites only.
 */
export interface BrokerTls {
  mode: 'tls' | 'mtls';
  /** PEM texts. */
  cert: string;
  key: string;
  clientCa?: string;
}

/** TLS 1.2 suites with AEAD only (TLS 1.3 has nothing else), as the broker's Go configuration. */
const AEAD_TLS12 = ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305'];

type BodyResult = { kind: 'ok'; body: Buffer } | { kind: 'too_large' } | { kind: 'error' };

function readBody(req: IncomingMessage): Promise<BodyResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.off('data', onData);
        // Keep consuming (and discarding) so the client can finish sending and read the 413.
        req.resume();
        resolve({ kind: 'too_large' });
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => resolve({ kind: 'ok', body: Buffer.concat(chunks) }));
    req.once('error', () => resolve({ kind: 'error' }));
    req.once('aborted', () => resolve({ kind: 'error' }));
  });
}

function send(res: ServerResponse, reply: Reply): void {
  res.statusCode = reply.status;
  for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);
  if (reply.body === undefined) {
    res.end();
    return;
  }
  res.setHeader('Content-Length', Buffer.byteLength(reply.body));
  res.end(reply.body);
}

/** Go's http.Error: plain text with the message and a newline. */
function plainText(status: number, message: string, extra: Record<string, string> = {}): Reply {
  return {
    status,
    headers: { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', ...extra },
    body: `${message}\n`,
  };
}

function redirect(method: string, location: string): Reply {
  if (method !== 'GET' && method !== 'HEAD') return { status: 301, headers: { Location: location } };
  const href = location.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&#34;');
  return {
    status: 301,
    headers: { Location: location, 'Content-Type': 'text/html; charset=utf-8' },
    body: method === 'GET' ? `<a href="${href}">Moved Permanently</a>.\n\n` : undefined,
  };
}

/** Bytes a path keeps as they are in Go's url.URL.EscapedPath: unreserved, and $&+,/:;=@. */
const PATH_KEEPS = /^[A-Za-z0-9\-_.~$&+,/:;=@]$/;

/** The path as Go's ServeMux writes it in a redirect (url.URL{Path}.String()): percent-escaped. */
export function escapePath(path: string): string {
  let out = '';
  for (const b of Buffer.from(path, 'utf8')) {
    const c = String.fromCharCode(b);
    out += b < 128 && PATH_KEEPS.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

async function dispatch(ctx: BrokerContext, router: Router<Handler>, req: BrokerRequest, segments: string[], rawQuery: string): Promise<Reply> {
  const clean = cleanPath(req.path);
  if (clean !== req.path) return redirect(req.method, rawQuery ? `${escapePath(clean)}?${rawQuery}` : escapePath(clean));
  const r = router.route(req.method, segments);
  if (r.kind === 'not_found') return plainText(404, '404 page not found');
  if (r.kind === 'method_not_allowed') return plainText(405, GO_STATUS_TEXT[405]!, { Allow: r.allow });
  req.params = r.params;
  try {
    return await r.handler(ctx, req);
  } catch (e) {
    if (e instanceof Problem) return problemReply(e, req.path, req.requestId);
    ctx.logger?.warn({ err: e instanceof Error ? e.message : String(e), path: req.path, request_id: req.requestId }, 'handler failed');
    return problemReply(new Problem(500, 'internal_error', 'internal server error'), req.path, req.requestId);
  }
}

export function createBrokerServer(ctx: BrokerContext, router: Router<Handler>, tls?: BrokerTls): Server {
  const handle: RequestListener = (req, res) => {
    const started = performance.now();
    const given = req.headers['x-request-id'];
    let requestId = typeof given === 'string' && given !== '' ? given : randomBytes(8).toString('hex');
    try {
      res.setHeader('X-Request-ID', requestId);
    } catch {
      // Echoed verbatim like the broker, unless Node cannot write the value back as a header.
      requestId = randomBytes(8).toString('hex');
      res.setHeader('X-Request-ID', requestId);
    }
    const method = req.method ?? 'GET';
    const target = parseTarget(req.url ?? '/');
    res.once('finish', () => {
      ctx.logger?.info(
        {
          method,
          path: target?.path,
          status: res.statusCode,
          duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
          request_id: requestId,
        },
        'request',
      );
    });
    if (!target) {
      // Go's server refuses an undecodable request target before any handler runs.
      send(res, plainText(400, '400 Bad Request', { Connection: 'close' }));
      return;
    }
    void readBody(req).then(async (b) => {
      const path = target.path;
      if (b.kind === 'too_large') {
        res.setHeader('Connection', 'close');
        send(res, problemReply(new Problem(413, 'payload_too_large', 'request body must not exceed 1 MB'), path, requestId));
        return;
      }
      if (b.kind === 'error') {
        if (!res.destroyed) send(res, problemReply(new Problem(400, 'invalid_request', 'failed to read request body'), path, requestId));
        return;
      }
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      if (tls) res.setHeader('Strict-Transport-Security', HSTS);
      const request: BrokerRequest = {
        method,
        path,
        query: new URLSearchParams(target.query),
        headers: req.headers,
        body: b.body,
        params: {},
        requestId,
        clientIp: clientIp(req.headers, req.socket.remoteAddress),
      };
      send(res, await dispatch(ctx, router, request, target.segments, target.query));
    }).catch((e: unknown) => {
      ctx.logger?.warn({ err: e instanceof Error ? e.message : String(e), request_id: requestId }, 'response failed');
      res.destroy();
    });
  };
  const options = { maxHeaderSize: MAX_BODY_BYTES };
  const server = tls
    ? createTlsServer(
        {
          ...options,
          cert: tls.cert,
          key: tls.key,
          minVersion: 'TLSv1.2',
          ciphers: AEAD_TLS12.join(':'),
          ...(tls.mode === 'mtls' ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
        },
        handle,
      )
    : createServer(options, handle);
  server.requestTimeout = 15_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 120_000;
  return server;
}
