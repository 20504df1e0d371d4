/**
 * The route table: the real broker's 19 routes plus one extension, `GET /.well-known/jwks.json`.
 */
import { adminAuth, appAuth } from './handlers/auth.js';
import { auditEvents, revoke } from './handlers/admin.js';
import { createApp, deleteApp, getApp, listApps, updateApp } from './handlers/apps.js';
import { createLaunchToken } from './handlers/launch.js';
import { delegate, release, renew } from './handlers/lifecycle.js';
import { challenge, health, jwks, metrics, validate } from './handlers/public.js';
import { register } from './handlers/register.js';
import { type Handler, withBearer } from './http.js';
import { type RouteDef, Router } from './router.js';

const LAUNCH = 'admin:launch-tokens:*';

export const ROUTES: readonly RouteDef<Handler>[] = [
  { method: 'GET', pattern: '/v1/challenge', handler: challenge },
  { method: 'GET', pattern: '/v1/health', handler: health },
  { method: 'GET', pattern: '/v1/metrics', handler: metrics },
  { method: 'POST', pattern: '/v1/token/validate', handler: validate },
  { method: 'POST', pattern: '/v1/admin/auth', handler: adminAuth },
  { method: 'POST', pattern: '/v1/app/auth', handler: appAuth },
  { method: 'POST', pattern: '/v1/register', handler: register },
  { method: 'POST', pattern: '/v1/token/renew', handler: withBearer(undefined, renew) },
  { method: 'POST', pattern: '/v1/token/release', handler: withBearer(undefined, release) },
  { method: 'POST', pattern: '/v1/delegate', handler: withBearer(undefined, delegate) },
  { method: 'POST', pattern: '/v1/revoke', handler: withBearer('admin:revoke:*', revoke) },
  { method: 'GET', pattern: '/v1/audit/events', handler: withBearer('admin:audit:*', auditEvents) },
  { method: 'POST', pattern: '/v1/admin/launch-tokens', handler: withBearer(LAUNCH, createLaunchToken) },
  { method: 'POST', pattern: '/v1/app/launch-tokens', handler: withBearer('app:launch-tokens:*', createLaunchToken) },
  { method: 'POST', pattern: '/v1/admin/apps', handler: withBearer(LAUNCH, createApp) },
  { method: 'GET', pattern: '/v1/admin/apps', handler: withBearer(LAUNCH, listApps) },
  { method: 'GET', pattern: '/v1/admin/apps/{id}', handler: withBearer(LAUNCH, getApp) },
  { method: 'PUT', pattern: '/v1/admin/apps/{id}', handler: withBearer(LAUNCH, updateApp) },
  { method: 'DELETE', pattern: '/v1/admin/apps/{id}', handler: withBearer(LAUNCH, deleteApp) },
  // Extension (not in AgentWrit): the public key as a JWK Set for offline verifiers.
  { method: 'GET', pattern: '/.well-known/jwks.json', handler: jwks },
];

export function brokerRouter(): Router<Handler> {
  return new Router(ROUTES);
}
