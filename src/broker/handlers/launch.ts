/**
 * Launch tokens, from the admin route (no ceiling, no scope format check) and the app route
 * (scopes must stay within the app's ceiling). One handler serves both, as in the broker: the
 * caller kind comes from the token subject.
 */
import { randomBytes } from 'node:crypto';
import { firstUncovered } from '../../auth/scope.js';
import { type BrokerContext, fmtList } from '../context.js';
import { bool, int, str, strings } from '../gojson.js';
import { type BearerHandler, decodeBody } from '../http.js';
import { badRequest, jsonReply, Problem } from '../problem.js';
import { rfc3339Seconds } from '../timefmt.js';

const DEFAULT_MAX_TTL = 300;
const DEFAULT_LAUNCH_TTL = 30;

export interface LaunchTokenParams {
  agentName: string;
  allowedScope: string[];
  /** Seconds; absent or ≤ 0 → 300. */
  maxTtl?: number;
  /** Seconds the launch token itself is valid; absent or ≤ 0 → 30. */
  ttl?: number;
  /** Default true. */
  singleUse?: boolean;
  appId: string;
  createdBy: string;
}

/** 9999-12-31T23:59:59Z, the last second RFC 3339 can write. */
const LAST_RFC3339_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/** Stores a new launch token, counts and audits it; the 201 body of the launch-token routes. */
export function issueLaunchToken(ctx: BrokerContext, p: LaunchTokenParams) {
  const maxTtl = p.maxTtl !== undefined && p.maxTtl > 0 ? p.maxTtl : DEFAULT_MAX_TTL;
  const ttl = p.ttl !== undefined && p.ttl > 0 ? p.ttl : DEFAULT_LAUNCH_TTL;
  const token = randomBytes(32).toString('hex');
  const expiresAtMs = ctx.now() + ttl * 1000;
  // Checked before anything is stored: an expiry past year 9999 has no RFC 3339 form.
  if (!(expiresAtMs <= LAST_RFC3339_MS)) throw badRequest('ttl is too large');
  const expiresAt = rfc3339Seconds(expiresAtMs);
  ctx.launchTokens.set(token, {
    agent_name: p.agentName,
    allowed_scope: [...p.allowedScope],
    max_ttl: maxTtl,
    single_use: p.singleUse ?? true,
    expires_at_ms: expiresAtMs,
    app_id: p.appId,
    created_by: p.createdBy,
  });
  ctx.metrics.launchTokensCreated.inc();
  ctx.audit.record({
    event_type: 'launch_token_issued',
    detail: `launch token issued: name=${p.agentName} scope=${fmtList(p.allowedScope)} max_ttl=${maxTtl} created_by=${p.createdBy} app_id=${p.appId}`,
    outcome: 'success',
  });
  return {
    launch_token: token,
    expires_at: expiresAt,
    policy: { allowed_scope: p.allowedScope, max_ttl: maxTtl },
  };
}

export const createLaunchToken: BearerHandler = (ctx, req, claims) => {
  const body = decodeBody(req, { agent_name: str, allowed_scope: strings, max_ttl: int, single_use: bool, ttl: int });
  const deny = (detail: string): never => {
    ctx.audit.record({ event_type: 'launch_token_denied', agent_id: claims.sub, detail: `launch token denied: ${detail}`, outcome: 'denied' });
    throw badRequest(detail);
  };
  const agentName = body.agent_name ?? '';
  const allowed = body.allowed_scope ?? [];
  if (!agentName) deny('agent_name is required');
  if (allowed.length === 0) deny('allowed_scope is required');
  // Whose authority this is: a token delegated from an app acts for that app (chain[0] is the
  // first delegator), so its ceiling still holds. Otherwise an app could delegate
  // app:launch-tokens:* to an agent and that agent, not `app:`, would mint past the ceiling.
  // (The reference broker looks at `sub` only; delegation is meant to narrow authority.)
  const principal = claims.delegation_chain?.[0]?.agent ?? claims.sub;
  let appId = '';
  if (principal.startsWith('app:')) {
    appId = principal.slice('app:'.length);
    // Status is not checked, as in the broker: a deregistered app's unexpired JWT still works here.
    const app = ctx.apps.get(appId);
    if (!app) throw new Problem(403, 'forbidden', 'app not found');
    const over = firstUncovered(allowed, app.scopes);
    if (over !== undefined) {
      ctx.audit.record({
        event_type: 'scope_ceiling_exceeded',
        agent_id: claims.sub,
        detail: `requested scope ${fmtList(allowed)} exceeds app ceiling ${fmtList(app.scopes)}`,
        outcome: 'denied',
      });
      throw new Problem(403, 'forbidden', `requested scope exceeds app ceiling: ${over}`);
    }
  }
  const issued = issueLaunchToken(ctx, {
    agentName,
    allowedScope: allowed,
    maxTtl: body.max_ttl,
    ttl: body.ttl,
    singleUse: body.single_use,
    appId,
    createdBy: claims.sub,
  });
  return jsonReply(201, issued);
};
