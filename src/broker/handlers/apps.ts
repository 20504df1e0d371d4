/**
 * App management (reference §2.4), all behind `admin:launch-tokens:*`.
 */
import { randomBytes } from 'node:crypto';
import { parseScope } from '../../auth/scope.js';
import { type AppRecord, type BrokerContext, fmtList } from '../context.js';
import { int, str, strings } from '../gojson.js';
import { type BearerHandler, decodeBody } from '../http.js';
import { badRequest, internalError, jsonReply, Problem } from '../problem.js';
import { hashSecret } from '../secrets.js';
import { rfc3339Seconds } from '../timefmt.js';

// The broker's pattern is ^[a-z][a-z0-9](?:-?[a-z0-9]+)*$; this equivalent form cannot backtrack
// exponentially on a long near-miss.
const APP_NAME = /^[a-z][a-z0-9]+(?:-[a-z0-9]+)*$/;
const MIN_TTL = 60;
const MAX_TTL = 86400;

function notFound(): Problem {
  return new Problem(404, 'not_found', 'app not found');
}

function checkScopes(scopes: readonly string[]): void {
  for (const s of scopes) {
    if (!parseScope(s)) throw badRequest(`invalid scope format: ${s} (want action:resource:identifier)`);
  }
}

function checkTtl(ttl: number): void {
  if (ttl <= 0 || ttl < MIN_TTL || ttl > MAX_TTL) {
    throw new Problem(400, 'invalid_ttl', `token_ttl must be between ${MIN_TTL} and ${MAX_TTL} seconds`);
  }
}

/**
 * The client id prefix: initials of the first three words of the name, or its first three
 * characters when it is one word (the broker uses a 2–3 letter abbreviation; the exact rule is
 * ours).
 */
export function clientIdPrefix(name: string): string {
  const words = name.split('-');
  return words.length >= 2 ? words.slice(0, 3).map((w) => w[0]).join('') : name.slice(0, 3);
}

export function appJson(a: AppRecord): Record<string, unknown> {
  return {
    app_id: a.app_id,
    name: a.name,
    client_id: a.client_id,
    scopes: a.scopes,
    token_ttl: a.token_ttl,
    status: a.status,
    created_at: a.created_at,
    updated_at: a.updated_at,
  };
}

function findApp(ctx: BrokerContext, id: string | undefined): AppRecord {
  const app = id === undefined ? undefined : ctx.apps.get(id);
  if (!app) throw notFound();
  return app;
}

export const createApp: BearerHandler = async (ctx, req) => {
  const body = decodeBody(req, { name: str, scopes: strings, token_ttl: int });
  const name = body.name ?? '';
  if (name.length > 64 || !APP_NAME.test(name)) {
    throw badRequest('invalid app name: lowercase letters, digits and single hyphens, starting with a letter, at most 64 characters');
  }
  const scopes = body.scopes ?? [];
  if (scopes.length === 0) throw badRequest('scopes is required');
  checkScopes(scopes);
  if (body.token_ttl !== undefined) checkTtl(body.token_ttl);
  const ttl = body.token_ttl ?? ctx.cfg.appTokenTtl;
  const secret = randomBytes(32).toString('hex');
  const secretHash = await hashSecret(secret);
  // Checked after the await so two concurrent requests cannot both pass. The broker has no 409:
  // a duplicate name fails in storage and surfaces as a 500 (reference §14.7).
  if ([...ctx.apps.values()].some((a) => a.name === name)) throw internalError('failed to register app');
  const at = rfc3339Seconds(ctx.now());
  const app: AppRecord = {
    app_id: `app-${name}-${randomBytes(3).toString('hex')}`,
    name,
    client_id: `${clientIdPrefix(name)}-${randomBytes(6).toString('hex')}`,
    secret_hash: secretHash,
    scopes: [...scopes],
    token_ttl: ttl,
    status: 'active',
    created_at: at,
    updated_at: at,
  };
  ctx.apps.set(app.app_id, app);
  ctx.audit.record({
    event_type: 'app_registered',
    detail: `app registered: name=${name} app_id=${app.app_id} client_id=${app.client_id} scopes=${fmtList(scopes)} token_ttl=${ttl}`,
    outcome: 'success',
  });
  await ctx.persist();
  // 201 and app-<name>-<hex> ids, as the broker's code does (its docs say 200 and a UUID, §14.7);
  // name and status are left empty in this one response (§2.4).
  return jsonReply(201, {
    app_id: app.app_id,
    name: '',
    client_id: app.client_id,
    client_secret: secret,
    scopes: app.scopes,
    token_ttl: ttl,
    status: '',
  });
};

export const listApps: BearerHandler = (ctx) => {
  const apps = [...ctx.apps.values()].map(appJson);
  return jsonReply(200, { apps, total: apps.length });
};

export const getApp: BearerHandler = (ctx, req) => jsonReply(200, appJson(findApp(ctx, req.params.id)));

/**
 * Validates both fields before changing either. (The real broker applies them one after the
 * other, so a bad token_ttl can leave new scopes in place; a failed update here changes nothing.)
 */
export const updateApp: BearerHandler = async (ctx, req) => {
  const app = findApp(ctx, req.params.id);
  const body = decodeBody(req, { scopes: strings, token_ttl: int });
  const scopes = body.scopes ?? [];
  if (scopes.length === 0 && body.token_ttl === undefined) throw badRequest('at least one of scopes or token_ttl is required');
  checkScopes(scopes);
  if (body.token_ttl !== undefined) checkTtl(body.token_ttl);
  if (scopes.length > 0) app.scopes = [...scopes];
  if (body.token_ttl !== undefined) app.token_ttl = body.token_ttl;
  app.updated_at = rfc3339Seconds(ctx.now());
  ctx.audit.record({
    event_type: 'app_updated',
    detail: `app updated: app_id=${app.app_id} scopes=${fmtList(app.scopes)} token_ttl=${app.token_ttl}`,
    outcome: 'success',
  });
  await ctx.persist();
  return jsonReply(200, appJson(app));
};

/** Soft delete: the app can no longer authenticate; tokens already issued stay valid. */
export const deleteApp: BearerHandler = async (ctx, req) => {
  const app = findApp(ctx, req.params.id);
  const at = rfc3339Seconds(ctx.now());
  app.status = 'inactive';
  app.updated_at = at;
  app.deregistered_at = at;
  ctx.audit.record({ event_type: 'app_deregistered', detail: `app deregistered: app_id=${app.app_id}`, outcome: 'success' });
  await ctx.persist();
  return jsonReply(200, {
    app_id: app.app_id,
    name: '',
    client_id: '',
    scopes: null,
    token_ttl: 0,
    status: 'inactive',
    deregistered_at: at,
  });
};
