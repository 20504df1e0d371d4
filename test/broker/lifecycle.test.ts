/**
 * The whole AgentWrit flow over HTTP against the embedded broker: admin auth → app → app auth →
 * launch token → challenge → register → validate → delegate → renew → release, then the audit
 * chain of everything that happened verifies.
 */
import { createHash, createPublicKey, verify } from 'node:crypto';
import t from 'tap';
import {
  adminAuth,
  allAuditEvents,
  appAuth,
  BrokerHttpError,
  createLaunchToken,
  delegate,
  registerAgent,
  release,
  renew,
  validate,
  verifyAuditChain,
} from '../../src/broker/client.js';
import { ADMIN_SECRET, http, isValid, payload, withBroker } from './fixture.js';

t.test('full lifecycle over HTTP', async (t) => {
  const b = await withBroker(t);
  const url = b.url;

  // Admin auth
  const admin = await adminAuth(url, ADMIN_SECRET);
  t.equal(admin.expiresIn, 300);
  const adminClaims = payload(admin.accessToken);
  t.equal(adminClaims.sub, 'admin');
  t.same(adminClaims.scope, ['admin:launch-tokens:*', 'admin:revoke:*', 'admin:audit:*']);
  t.notOk('aud' in adminClaims, 'no aud without a configured audience');
  t.notOk('task_id' in adminClaims);
  t.equal(adminClaims.iss, '', 'iss present and empty without an issuer');

  // App registration (201, name and status empty in this response)
  const created = await http(url, 'POST', '/v1/admin/apps', {
    token: admin.accessToken,
    json: { name: 'billing-bot', scopes: ['read:data:*', 'write:data:*'], token_ttl: 600 },
  });
  t.equal(created.status, 201);
  t.same(Object.keys(created.json), ['app_id', 'name', 'client_id', 'client_secret', 'scopes', 'token_ttl', 'status']);
  t.match(created.json.app_id, /^app-billing-bot-[0-9a-f]{6}$/);
  t.match(created.json.client_id, /^bb-[0-9a-f]{12}$/);
  t.match(created.json.client_secret, /^[0-9a-f]{64}$/);
  t.equal(created.json.name, '');
  t.equal(created.json.status, '');
  t.equal(created.json.token_ttl, 600);

  // App auth
  const app = await appAuth(url, created.json.client_id, created.json.client_secret);
  t.equal(app.expiresIn, 600);
  t.same(app.scopes, ['app:launch-tokens:*', 'app:agents:*', 'app:audit:read']);
  t.equal(payload(app.accessToken).sub, `app:${created.json.app_id}`);

  // Launch token from the app route, within the ceiling
  const lt = await createLaunchToken(url, app.accessToken, { agentName: 'reader', allowedScope: ['read:data:*'], maxTtl: 120 }, 'app');
  t.match(lt.launchToken, /^[0-9a-f]{64}$/);
  t.match(lt.expiresAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.same(lt.policy, { allowed_scope: ['read:data:*'], max_ttl: 120 });

  // Challenge → register (the client signs the hex-decoded nonce)
  const ch = await http(url, 'GET', '/v1/challenge');
  t.equal(ch.status, 200);
  t.match(ch.json.nonce, /^[0-9a-f]{64}$/);
  t.equal(ch.json.expires_in, 30);
  const a = await registerAgent(url, { launchToken: lt.launchToken, orchId: 'orch-1', taskId: 'task-1', requestedScope: ['read:data:*'] });
  t.match(a.agentId, /^spiffe:\/\/agentwrit\.local\/agent\/orch-1\/task-1\/[0-9a-f]{16}$/);
  t.equal(a.expiresIn, 120);
  const ac = payload(a.accessToken);
  t.same(Object.keys(ac), ['iss', 'sub', 'exp', 'nbf', 'iat', 'jti', 'scope', 'task_id', 'orch_id']);
  t.equal(ac.exp - ac.iat, 120);
  t.equal(ac.nbf, ac.iat);
  t.match(ac.jti, /^[0-9a-f]{32}$/);

  // Validate: claims exactly as in the payload
  const v = await validate(url, a.accessToken);
  t.same(v, { valid: true, claims: ac });

  // A second agent to delegate to (admin route: no ceiling)
  const lt2 = await createLaunchToken(url, admin.accessToken, { agentName: 'writer', allowedScope: ['read:data:customers'] });
  const d = await registerAgent(url, { launchToken: lt2.launchToken, orchId: 'orch-1', taskId: 'task-2', requestedScope: ['read:data:customers'] });

  // Delegate narrower: ok
  const del = await delegate(url, a.accessToken, { delegateTo: d.agentId, scope: ['read:data:customers'] });
  t.equal(del.expiresIn, 60, 'default delegation TTL');
  t.equal(del.delegationChain.length, 1);
  const rec = del.delegationChain[0]!;
  t.equal(rec.agent, a.agentId);
  t.same(rec.scope, ['read:data:*'], "the record carries the delegator's whole scope");
  const dc = payload(del.accessToken);
  t.equal(dc.sub, d.agentId);
  t.same(dc.scope, ['read:data:customers']);
  t.equal(dc.task_id, 'task-1', "task copied from the delegator");
  t.same(dc.delegation_chain, del.delegationChain);
  // The record signature and chain_hash check out with the key from the JWKS extension.
  const jwks = await http(url, 'GET', '/.well-known/jwks.json');
  const pub = createPublicKey({ key: jwks.json.keys[0], format: 'jwk' });
  t.ok(verify(null, Buffer.from(`${rec.agent}|${rec.scope!.join(',')}|${rec.delegated_at}`), pub, Buffer.from(rec.signature, 'hex')));
  const raw = Buffer.from(del.accessToken.split('.')[1]!, 'base64url').toString('utf8');
  const chainText = raw.slice(raw.indexOf('"delegation_chain":') + 19, raw.indexOf(',"chain_hash"'));
  t.equal(dc.chain_hash, createHash('sha256').update(chainText).digest('hex'));
  t.ok(await isValid(url, del.accessToken));

  // Delegate wider: refused
  const wider = await http(url, 'POST', '/v1/delegate', { token: a.accessToken, json: { delegate_to: d.agentId, scope: ['write:data:customers'] } });
  t.equal(wider.status, 403);
  t.equal(wider.json.error_code, 'scope_violation');

  // Renew: the old token dies, the new one keeps claims and lifetime
  const renewed = await renew(url, a.accessToken);
  t.equal(renewed.expiresIn, 120);
  const rc = payload(renewed.accessToken);
  t.equal(rc.sub, ac.sub);
  t.same(rc.scope, ac.scope);
  t.not(rc.jti, ac.jti);
  t.same(await validate(url, a.accessToken), { valid: false, error: 'token is invalid or expired' });
  t.ok(await isValid(url, renewed.accessToken));
  const again = await http(url, 'POST', '/v1/token/renew', { token: a.accessToken });
  t.equal(again.status, 401, 'the superseded token is refused on Bearer endpoints');

  // Release: 204, then 401
  const rel = await http(url, 'POST', '/v1/token/release', { token: renewed.accessToken });
  t.equal(rel.status, 204);
  t.equal(rel.text, '');
  const rel2 = await http(url, 'POST', '/v1/token/release', { token: renewed.accessToken });
  t.equal(rel2.status, 401);
  t.equal(rel2.json.error_code, 'unauthorized');
  t.equal(rel2.json.detail, 'token verification failed');
  await t.rejects(release(url, renewed.accessToken), BrokerHttpError);

  // Audit: everything above, chained
  const events = await allAuditEvents(url, admin.accessToken);
  t.same(verifyAuditChain(events), { ok: true, count: events.length });
  const types = events.map((e) => e.event_type);
  for (const ty of [
    'admin_auth',
    'app_registered',
    'app_authenticated',
    'launch_token_issued',
    'agent_registered',
    'token_issued',
    'delegation_created',
    'delegation_attenuation_violation',
    'token_renewed',
    'token_released',
    'token_auth_failed',
  ]) {
    t.ok(types.includes(ty), `audit has ${ty}`);
  }
  const reg = events.find((e) => e.event_type === 'agent_registered')!;
  t.equal(reg.detail, 'Agent registered with scope [read:data:*]');
  const ren = events.find((e) => e.event_type === 'token_renewed')!;
  t.equal(ren.detail, `token renewed for agent=${a.agentId} new_jti=${rc.jti}`);
  const dce = events.find((e) => e.event_type === 'delegation_created')!;
  t.equal(dce.deleg_depth, 1);
  t.equal(dce.deleg_chain_hash, dc.chain_hash);
  t.equal(dce.agent_id, d.agentId);
});

t.test('delegation chain depth: five records at most, and missing fields are a 500', async (t) => {
  const b = await withBroker(t);
  const admin = await adminAuth(b.url, ADMIN_SECRET);
  const lt = await createLaunchToken(b.url, admin.accessToken, { agentName: 'x', allowedScope: ['read:data:*'], singleUse: false });
  const agents = [];
  for (let i = 0; i < 2; i++) {
    agents.push(await registerAgent(b.url, { launchToken: lt.launchToken, orchId: 'o', taskId: `t${i}`, requestedScope: ['read:data:*'] }));
  }
  let token = agents[0]!.accessToken;
  for (let depth = 1; depth <= 5; depth++) {
    const r = await delegate(b.url, token, { delegateTo: agents[depth % 2]!.agentId, scope: ['read:data:*'], ttl: 30 });
    t.equal(r.delegationChain.length, depth);
    t.equal(r.expiresIn, 30);
    token = r.accessToken;
  }
  const deep = await http(b.url, 'POST', '/v1/delegate', { token, json: { delegate_to: agents[0]!.agentId, scope: ['read:data:*'] } });
  t.equal(deep.status, 403);
  t.equal(deep.json.error_code, 'scope_violation');
  t.equal(deep.json.detail, 'delegation depth limit exceeded');

  // Reference §14.6: the broker answers missing delegate_to/scope with 500, not 400. We follow the code.
  const missing = await http(b.url, 'POST', '/v1/delegate', { token: agents[0]!.accessToken, json: { scope: ['read:data:*'] } });
  t.equal(missing.status, 500);
  t.equal(missing.json.error_code, 'internal_error');
  const noScope = await http(b.url, 'POST', '/v1/delegate', { token: agents[0]!.accessToken, json: { delegate_to: agents[1]!.agentId } });
  t.equal(noScope.status, 500);
  const unknown = await http(b.url, 'POST', '/v1/delegate', {
    token: agents[0]!.accessToken,
    json: { delegate_to: 'spiffe://agentwrit.local/agent/o/t/ffffffffffffffff', scope: ['read:data:*'] },
  });
  t.equal(unknown.status, 404);
  t.equal(unknown.json.detail, 'delegate agent not found');
});
