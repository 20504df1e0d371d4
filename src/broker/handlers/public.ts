/**
 * Unauthenticated routes: challenge, health, metrics, token validation, and this broker's JWKS
 * extension.
 */
import { randomBytes } from 'node:crypto';
import { str } from '../gojson.js';
import { claimsJson } from '../jwt.js';
import { type Handler, decodeBody } from '../http.js';
import { badRequest, jsonReply } from '../problem.js';

export const NONCE_TTL_MS = 30_000;
export const BROKER_VERSION = '2.0.0';

export const challenge: Handler = (ctx) => {
  const nonce = randomBytes(32).toString('hex');
  ctx.nonces.set(nonce, ctx.now() + NONCE_TTL_MS);
  return jsonReply(200, { nonce, expires_in: 30 });
};

/** `db_connected` reports whether the state store is writable: always true in memory mode. */
export const health: Handler = (ctx) =>
  jsonReply(200, {
    status: 'ok',
    version: BROKER_VERSION,
    uptime: Math.max(0, Math.floor((ctx.now() - ctx.startedAt) / 1000)),
    db_connected: ctx.storeHealthy(),
    audit_events_count: ctx.audit.count(),
  });

export const metrics: Handler = async (ctx) => ({
  status: 200,
  headers: { 'Content-Type': ctx.metrics.registry.contentType },
  body: await ctx.metrics.registry.metrics(),
});

/**
 * Extension: the real AgentWrit broker publishes no key at all (reference §0.2, §14.1). This
 * endpoint lets a sidecar verify offline against the development broker without copying PEM files.
 */
export const jwks: Handler = (ctx) => jsonReply(200, { keys: [ctx.key.jwk] });

const GENERIC_INVALID = 'token is invalid or expired';

/**
 * Always 200: claims when the token verifies (signature, kid, times, issuer, revocation), else one
 * generic message whatever the cause. Audience is deliberately not checked: the broker's code
 * skips it here whatever its docs imply (reference §14.18).
 */
export const validate: Handler = (ctx, req) => {
  const body = decodeBody(req, { token: str });
  if (!body.token) throw badRequest('token field is required');
  const r = ctx.tokens.verify(body.token);
  if (!r.ok) return jsonReply(200, { valid: false, error: GENERIC_INVALID });
  return jsonReply(200, { valid: true, claims: claimsJson(r.claims) });
};
