/**
 * Request shape seen by handlers, JSON body decoding with Go's leniency, and the Bearer
 * middleware of reference §2.0.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { scopeCovers } from '../auth/scope.js';
import type { BrokerContext } from './context.js';
import { type Decoded, decodeStruct, type Spec } from './gojson.js';
import { parseFirstValue } from './jsonparse.js';
import type { Claims } from './jwt.js';
import { badRequest, Problem, type Reply, unauthorized } from './problem.js';

export interface BrokerRequest {
  method: string;
  /** Decoded URL path, used as problem `instance` and audit `resource`. */
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  body: Buffer;
  params: Record<string, string>;
  requestId: string;
  /** First X-Forwarded-For element when present (trusted, as the broker does), else the peer address. */
  clientIp: string;
}

export type Handler = (ctx: BrokerContext, req: BrokerRequest) => Reply | Promise<Reply>;
export type BearerHandler = (ctx: BrokerContext, req: BrokerRequest, claims: Claims) => Reply | Promise<Reply>;

// Go does not strip a byte-order mark, so neither do we: a BOM makes the body malformed.
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Decodes the first JSON value of the body into `spec`. Content-Type is not looked at (the broker
 * ignores it); unknown members and trailing data are ignored; syntax and type errors are 400.
 */
export function decodeBody<S extends Spec>(req: BrokerRequest, spec: S): Decoded<S> {
  try {
    return decodeStruct(parseFirstValue(utf8.decode(req.body)), spec);
  } catch {
    throw badRequest('malformed JSON body');
  }
}

/** Same as decodeBody, but a body that does not decode yields undefined instead of a 400. */
export function peekBody<S extends Spec>(req: BrokerRequest, spec: S): Decoded<S> | undefined {
  try {
    return decodeStruct(parseFirstValue(utf8.decode(req.body)), spec);
  } catch {
    return undefined;
  }
}

export function clientIp(headers: IncomingHttpHeaders, remoteAddress: string | undefined): string {
  const xff = headers['x-forwarded-for'];
  const first = Array.isArray(xff) ? xff[0] : xff;
  if (first) return first.split(',')[0]!;
  return remoteAddress ?? '';
}

/**
 * The broker's validation middleware: missing header, wrong scheme, failed verification
 * (revoked included: 401 — the real broker's documented 403 is unreachable, reference §14.2),
 * audience, then the scope gate.
 */
export function withBearer(requiredScope: string | undefined, h: BearerHandler): Handler {
  return (ctx, req) => {
    const header = req.headers.authorization;
    if (!header) {
      ctx.audit.record({ event_type: 'token_auth_failed', detail: 'missing authorization header', resource: req.path, outcome: 'denied' });
      throw unauthorized('missing authorization header');
    }
    if (!header.startsWith('Bearer ')) throw unauthorized('invalid authorization scheme');
    const r = ctx.tokens.verify(header.slice('Bearer '.length));
    if (!r.ok) {
      ctx.audit.record({
        event_type: 'token_auth_failed',
        detail: `token verification failed: ${r.reason}`,
        resource: req.path,
        outcome: 'denied',
      });
      throw unauthorized('token verification failed');
    }
    const claims = r.claims;
    if (ctx.cfg.audience && !(claims.aud ?? []).includes(ctx.cfg.audience)) throw unauthorized('token audience mismatch');
    if (requiredScope && !(claims.scope ?? []).some((s) => scopeCovers(s, requiredScope))) {
      ctx.audit.record({
        event_type: 'scope_violation',
        agent_id: claims.sub,
        task_id: claims.task_id,
        orch_id: claims.orch_id,
        detail: `token lacks required scope: ${requiredScope}`,
        resource: req.path,
        outcome: 'denied',
      });
      throw new Problem(403, 'insufficient_scope', `token lacks required scope: ${requiredScope}`);
    }
    return h(ctx, req, claims);
  };
}
