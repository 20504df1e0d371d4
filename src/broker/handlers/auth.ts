/**
 * Admin and app authentication, each behind its own rate limiter (reference §1.4): admin 5/s
 * burst 10 per client IP, app 10/min burst 3 per client_id (IP when the body has none). The
 * broker's docs claim 5/s per IP for both; the code limits app auth as here (reference §14.9).
 * The admin token TTL is configurable (adminTokenTtl), not the docs' fixed 300 s (§14.8).
 */
import { str } from '../gojson.js';
import { decodeBody, type Handler, peekBody } from '../http.js';
import { badRequest, jsonReply, Problem, unauthorized } from '../problem.js';
import { decoyVerify, verifySecret } from '../secrets.js';

export const ADMIN_SCOPES = ['admin:launch-tokens:*', 'admin:revoke:*', 'admin:audit:*'];
export const APP_SCOPES = ['app:launch-tokens:*', 'app:agents:*', 'app:audit:read'];

function rateLimited(retryAfter: string): Problem {
  return new Problem(429, 'rate_limited', 'rate limit exceeded', { 'Retry-After': retryAfter });
}

export const adminAuth: Handler = async (ctx, req) => {
  if (!ctx.adminLimiter.allow(req.clientIp)) throw rateLimited('1');
  const body = decodeBody(req, { secret: str, client_id: str, client_secret: str });
  if (body.client_id || body.client_secret) {
    throw badRequest('admin authentication takes {"secret": "..."}; client_id/client_secret are for app authentication at /v1/app/auth');
  }
  if (!body.secret) throw badRequest('secret is required');
  if (!(await verifySecret(body.secret, ctx.adminSecretHash))) {
    ctx.metrics.adminAuth.inc({ status: 'failure' });
    ctx.audit.record({ event_type: 'admin_auth_failed', detail: 'admin authentication failed: invalid credentials', outcome: 'denied' });
    throw unauthorized('invalid credentials');
  }
  const issued = ctx.tokens.issue({ sub: 'admin', scope: [...ADMIN_SCOPES], ttl: ctx.cfg.adminTokenTtl });
  ctx.metrics.adminAuth.inc({ status: 'success' });
  ctx.audit.record({ event_type: 'admin_auth', detail: 'admin authenticated', outcome: 'success' });
  return jsonReply(200, { access_token: issued.token, expires_in: issued.expiresIn, token_type: 'Bearer' });
};

export const appAuth: Handler = async (ctx, req) => {
  const key = peekBody(req, { client_id: str })?.client_id || req.clientIp;
  if (!ctx.appLimiter.allow(key)) throw rateLimited('60');
  const body = decodeBody(req, { client_id: str, client_secret: str });
  if (!body.client_id || !body.client_secret) throw badRequest('client_id and client_secret are required');
  const clientId = body.client_id;
  const app = [...ctx.apps.values()].find((a) => a.client_id === clientId);
  const fail = (reason: string): never => {
    ctx.audit.record({ event_type: 'app_auth_failed', detail: `app authentication failed: client_id=${clientId} reason=${reason}`, outcome: 'denied' });
    throw unauthorized('Authentication failed');
  };
  if (!app) {
    await decoyVerify(body.client_secret);
    return fail('unknown client');
  }
  const secretOk = await verifySecret(body.client_secret, app.secret_hash);
  if (app.status !== 'active') return fail('app inactive');
  if (!secretOk) return fail('invalid credentials');
  const issued = ctx.tokens.issue({ sub: `app:${app.app_id}`, scope: [...APP_SCOPES], ttl: app.token_ttl });
  ctx.audit.record({ event_type: 'app_authenticated', detail: `app authenticated: app_id=${app.app_id} client_id=${app.client_id}`, outcome: 'success' });
  return jsonReply(200, { access_token: issued.token, expires_in: issued.expiresIn, token_type: 'Bearer', scopes: [...APP_SCOPES] });
};
