/**
 * Bad input gets the documented error and changes no state (beyond what the contract says: the
 * nonce is spent from registration step 4 on, and failed authentications are audited).
 */
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import t from 'tap';
import { adminAuth, appAuth, createApp, createLaunchToken, delegate, registerAgent } from '../../src/broker/client.js';
import { ADMIN_SECRET, http, isValid, payload, withBroker } from './fixture.js';

function keyPair(): { priv: KeyObject; pub: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { priv: privateKey, pub: Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('base64') };
}

async function nonce(url: string): Promise<string> {
  return (await http(url, 'GET', '/v1/challenge')).json.nonce;
}

function regBody(launchToken: string, n: string, k = keyPair(), extra: Record<string, unknown> = {}) {
  return {
    launch_token: launchToken,
    nonce: n,
    public_key: k.pub,
    signature: sign(null, Buffer.from(n, 'hex'), k.priv).toString('base64'),
    orch_id: 'orch',
    task_id: 'task',
    requested_scope: ['read:data:x'],
    ...extra,
  };
}

t.test('registration', async (t) => {
  const b = await withBroker(t);
  const url = b.url;
  const admin = (await adminAuth(url, ADMIN_SECRET)).accessToken;
  const launch = async (singleUse = true) =>
    (await createLaunchToken(url, admin, { agentName: 'a', allowedScope: ['read:data:*'], singleUse })).launchToken;
  const register = (body: unknown) => http(url, 'POST', '/v1/register', { json: body });

  t.test('malformed JSON and type mismatches: 400, nothing consumed', async (t) => {
    const lt = await launch();
    const n = await nonce(url);
    for (const body of ['{"launch_token": "', '', 'null x', '[1,2]', '{"requested_scope": "read:data:x"}', '\ufeff{}']) {
      const r = await http(url, 'POST', '/v1/register', { body, headers: { 'content-type': 'application/json' } });
      t.equal(r.status, 400, JSON.stringify(body));
      t.equal(r.json.error_code, 'invalid_request');
    }
    const typed = await register({ ...regBody(lt, n), requested_scope: 'read:data:x' });
    t.equal(typed.status, 400);
    t.equal(typed.json.detail, 'malformed JSON body');
    const ok = await register(regBody(lt, n));
    t.equal(ok.status, 200, 'the same nonce and launch token still work');
  });

  t.test('missing fields: 400 naming the field, nothing consumed', async (t) => {
    const lt = await launch();
    const n = await nonce(url);
    for (const field of ['launch_token', 'nonce', 'public_key', 'signature', 'orch_id', 'task_id', 'requested_scope']) {
      const body: Record<string, unknown> = regBody(lt, n);
      delete body[field];
      const r = await register(body);
      t.equal(r.status, 400, field);
      t.equal(r.json.detail, `${field} is required`);
    }
    t.equal((await register({ ...regBody(lt, n), requested_scope: [] })).status, 400, 'empty scope list');
    t.equal((await register(regBody(lt, n))).status, 200);
  });

  t.test('scope beyond the launch token: 403, nonce and launch token untouched', async (t) => {
    const lt = await launch();
    const n = await nonce(url);
    const r = await register({ ...regBody(lt, n), requested_scope: ['write:data:x'] });
    t.equal(r.status, 403);
    t.equal(r.json.error_code, 'scope_violation');
    t.equal((await register(regBody(lt, n))).status, 200);
  });

  t.test('replayed nonce: 401, launch token not consumed', async (t) => {
    const n = await nonce(url);
    t.equal((await register(regBody(await launch(), n))).status, 200);
    const lt = await launch();
    const replay = await register(regBody(lt, n));
    t.equal(replay.status, 401);
    t.equal(replay.json.error_code, 'unauthorized');
    t.equal((await register(regBody(lt, await nonce(url)))).status, 200, 'the launch token was left unused');
  });

  t.test('reused single-use launch token: 401, nonce not consumed', async (t) => {
    const lt = await launch();
    t.equal((await register(regBody(lt, await nonce(url)))).status, 200);
    const n = await nonce(url);
    const reuse = await register(regBody(lt, n));
    t.equal(reuse.status, 401);
    t.equal(reuse.json.detail, 'invalid or expired launch token');
    t.equal((await register(regBody(await launch(), n))).status, 200, 'the nonce is checked after the launch token');
    const multi = await launch(false);
    t.equal((await register(regBody(multi, await nonce(url)))).status, 200);
    t.equal((await register(regBody(multi, await nonce(url)))).status, 200, 'multi-use launch tokens are reusable');
  });

  t.test('forged signature: 401, launch token kept, nonce spent (step 4 precedes step 6)', async (t) => {
    const lt = await launch();
    const n = await nonce(url);
    const other = keyPair();
    const forged = { ...regBody(lt, n), signature: sign(null, Buffer.from(n, 'hex'), other.priv).toString('base64') };
    const r = await register(forged);
    t.equal(r.status, 401);
    t.equal(r.json.detail, 'invalid signature');
    t.equal((await register(regBody(lt, n))).status, 401, 'the nonce was consumed');
    t.equal((await register(regBody(lt, await nonce(url)))).status, 200, 'the launch token was not');
    const n2 = await nonce(url);
    const overUtf8 = { ...regBody(await launch(), n2), signature: sign(null, Buffer.from(n2, 'utf8'), keyPair().priv).toString('base64') };
    t.equal((await register(overUtf8)).status, 401, 'signing the hex text instead of its bytes fails');
  });

  t.test('bad public key: 401', async (t) => {
    const lt = await launch();
    for (const pk of [Buffer.alloc(31).toString('base64'), 'not base64!', Buffer.alloc(32).toString('base64url').slice(0, 43)]) {
      const r = await register({ ...regBody(lt, await nonce(url)), public_key: pk });
      t.equal(r.status, 401, pk);
      t.equal(r.json.detail, 'invalid public key');
    }
    t.equal((await register(regBody(lt, await nonce(url)))).status, 200);
  });

  t.test('ids that are not SPIFFE segments: 500, both nonce and launch token spent', async (t) => {
    const lt = await launch();
    const n = await nonce(url);
    const r = await register({ ...regBody(lt, n), orch_id: 'orch/1' });
    t.equal(r.status, 500);
    t.equal(r.json.error_code, 'internal_error');
    t.equal(r.json.detail, 'registration failed');
    t.equal((await register(regBody(await launch(), n))).status, 401, 'nonce spent');
    t.equal((await register(regBody(lt, await nonce(url)))).status, 401, 'launch token spent');
  });
});

t.test('expiry of nonces (30 s) and launch tokens', async (t) => {
  let clock = Date.parse('2030-01-01T00:00:00Z');
  const b = await withBroker(t, { now: () => clock });
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const lt = (await createLaunchToken(b.url, admin, { agentName: 'a', allowedScope: ['read:data:*'], ttl: 60 })).launchToken;
  const n = await nonce(b.url);
  clock += 30_001;
  t.equal((await http(b.url, 'POST', '/v1/register', { json: regBody(lt, n) })).status, 401, 'nonce older than 30 s');
  clock += 30_000;
  const r = await http(b.url, 'POST', '/v1/register', { json: regBody(lt, await nonce(b.url)) });
  t.equal(r.status, 401, 'launch token past its ttl');
  t.equal(r.json.detail, 'invalid or expired launch token');
});

t.test('content type is ignored, like the broker does', async (t) => {
  const b = await withBroker(t);
  const asText = await http(b.url, 'POST', '/v1/admin/auth', { body: JSON.stringify({ secret: ADMIN_SECRET }), headers: { 'content-type': 'text/plain' } });
  t.equal(asText.status, 200, 'a JSON body labelled text/plain is decoded');
  const none = await http(b.url, 'POST', '/v1/admin/auth', { body: JSON.stringify({ secret: ADMIN_SECRET }) });
  t.equal(none.status, 200, 'no content type at all');
  const form = await http(b.url, 'POST', '/v1/admin/auth', {
    body: `secret=${ADMIN_SECRET}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  t.equal(form.status, 400, 'a form body is not JSON');
  t.equal(form.json.detail, 'malformed JSON body');
  const lenient = await http(b.url, 'POST', '/v1/admin/auth', { body: `{"SECRET": ${JSON.stringify(ADMIN_SECRET)}, "extra": 1} trailing` });
  t.equal(lenient.status, 200, 'case-insensitive keys, unknown members and trailing data are accepted');
});

t.test('oversized body: 413, no state change', async (t) => {
  const b = await withBroker(t);
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const before = (await http(b.url, 'GET', '/v1/health')).json.audit_events_count;
  const name = 'a'.repeat(1024 * 1024);
  const r = await http(b.url, 'POST', '/v1/admin/apps', { token: admin, json: { name, scopes: ['read:data:*'] }, headers: { 'x-request-id': 'big-1' } });
  t.equal(r.status, 413);
  t.equal(r.headers['content-type'], 'application/problem+json');
  t.same(r.json, {
    type: 'urn:agentwrit:error:payload_too_large',
    title: 'Request Entity Too Large',
    status: 413,
    detail: 'request body must not exceed 1 MB',
    instance: '/v1/admin/apps',
    error_code: 'payload_too_large',
    request_id: 'big-1',
  });
  t.equal(r.headers['x-request-id'], 'big-1');
  t.notOk(r.headers['x-content-type-options'], 'no security headers on 413');
  t.notOk(r.headers['cache-control']);
  t.equal((await http(b.url, 'GET', '/v1/admin/apps', { token: admin })).json.total, 0);
  t.equal((await http(b.url, 'GET', '/v1/health')).json.audit_events_count, before);
  // Exactly 1 MiB is still accepted.
  const head = '{"token":"x"}';
  const exact = await http(b.url, 'POST', '/v1/token/validate', { body: head + ' '.repeat(1024 * 1024 - head.length) });
  t.equal(exact.status, 200);
  t.same(exact.json, { valid: false, error: 'token is invalid or expired' });
});

t.test('admin auth: wrong secret, migration body, missing secret', async (t) => {
  const b = await withBroker(t);
  const wrong = await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: 'not-it' } });
  t.equal(wrong.status, 401);
  t.equal(wrong.json.detail, 'invalid credentials');
  t.notOk(wrong.json.access_token);
  const migration = await http(b.url, 'POST', '/v1/admin/auth', { json: { client_id: 'admin', client_secret: ADMIN_SECRET } });
  t.equal(migration.status, 400);
  t.match(migration.json.detail, /client_id\/client_secret/);
  const missing = await http(b.url, 'POST', '/v1/admin/auth', { json: {} });
  t.equal(missing.status, 400);
  t.equal(missing.json.detail, 'secret is required');
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const ev = await http(b.url, 'GET', '/v1/audit/events', { token: admin });
  t.same(
    ev.json.events.map((e: { event_type: string; outcome: string }) => [e.event_type, e.outcome]),
    [
      ['admin_auth_failed', 'denied'],
      ['admin_auth', 'success'],
    ],
    'only the wrong secret and the success are audited; the secret never appears',
  );
  t.notMatch(JSON.stringify(ev.json), /not-it/);
});

t.test('rate limits', async (t) => {
  let clock = Date.parse('2030-01-01T00:00:00Z');
  const b = await withBroker(t, { now: () => clock });

  t.test('admin auth: 5/s, burst 10, per client IP', async (t) => {
    for (let i = 0; i < 10; i++) t.equal((await http(b.url, 'POST', '/v1/admin/auth', { json: {} })).status, 400);
    const limited = await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: ADMIN_SECRET } });
    t.equal(limited.status, 429);
    t.equal(limited.headers['retry-after'], '1');
    t.equal(limited.json.error_code, 'rate_limited');
    t.equal(limited.json.title, 'Too Many Requests');
    const other = await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: ADMIN_SECRET }, headers: { 'x-forwarded-for': '192.0.2.7, 10.0.0.1' } });
    t.equal(other.status, 200, 'another client (first X-Forwarded-For element) has its own bucket');
    clock += 200;
    t.equal((await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: ADMIN_SECRET } })).status, 200, 'one token back after 200 ms');
    t.equal((await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: ADMIN_SECRET } })).status, 429);
  });

  t.test('app auth: 10/min, burst 3, per client_id', async (t) => {
    clock += 10_000;
    const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
    const app = await createApp(b.url, admin, { name: 'limited', scopes: ['read:data:*'] });
    for (let i = 0; i < 3; i++) t.ok(await appAuth(b.url, app.clientId, app.clientSecret));
    const limited = await http(b.url, 'POST', '/v1/app/auth', { json: { client_id: app.clientId, client_secret: app.clientSecret } });
    t.equal(limited.status, 429);
    t.equal(limited.headers['retry-after'], '60');
    const otherId = await http(b.url, 'POST', '/v1/app/auth', { json: { client_id: 'zz-000000000000', client_secret: 'x' } });
    t.equal(otherId.status, 401, 'another client_id is not limited');
    t.equal(otherId.json.detail, 'Authentication failed');
    clock += 6_000;
    t.ok(await appAuth(b.url, app.clientId, app.clientSecret), 'one token back after 6 s');
  });
});

t.test('forged and malformed bearer tokens', async (t) => {
  const b = await withBroker(t);
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const [h, p, s] = admin.split('.') as [string, string, string];
  const claims = payload(admin);
  const widened = Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 3600 })).toString('base64url');
  const noneHeader = Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url');
  const otherKid = Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid: 'x' })).toString('base64url');
  const forged: Record<string, string> = {
    'payload changed': `${h}.${widened}.${s}`,
    'alg none': `${noneHeader}.${p}.`,
    'unknown kid': `${otherKid}.${p}.${s}`,
    'signature from another key': `${h}.${p}.${Buffer.alloc(64, 7).toString('base64url')}`,
    'two parts': `${h}.${p}`,
    garbage: 'not-a-jwt',
  };
  for (const [what, token] of Object.entries(forged)) {
    const r = await http(b.url, 'GET', '/v1/audit/events', { token });
    t.equal(r.status, 401, what);
    t.equal(r.json.detail, 'token verification failed', what);
    t.same(await http(b.url, 'POST', '/v1/token/validate', { json: { token } }).then((x) => x.json), { valid: false, error: 'token is invalid or expired' }, what);
  }
  const noHeader = await http(b.url, 'GET', '/v1/audit/events');
  t.equal(noHeader.status, 401);
  t.equal(noHeader.json.detail, 'missing authorization header');
  const scheme = await http(b.url, 'GET', '/v1/audit/events', { headers: { authorization: `bearer ${admin}` } });
  t.equal(scheme.status, 401);
  t.equal(scheme.json.detail, 'invalid authorization scheme');
  const noToken = await http(b.url, 'POST', '/v1/token/validate', { json: {} });
  t.equal(noToken.status, 400);
  t.equal(noToken.json.detail, 'token field is required');
  t.ok(await isValid(b.url, admin), 'the genuine token is unaffected');
  const audit = await http(b.url, 'GET', '/v1/audit/events?event_type=token_auth_failed', { token: admin });
  t.equal(audit.json.total, Object.keys(forged).length + 1, 'verification failures and the missing header are audited');
  t.equal(audit.json.events[0].resource, '/v1/audit/events');
  t.notMatch(JSON.stringify(audit.json), new RegExp(s.slice(0, 20)), 'no token material in the audit log');
});

t.test('a launch-token ttl past the last date there is: 400, and nothing counted or audited as issued', async (t) => {
  const b = await withBroker(t);
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const issued = async () => (await http(b.url, 'GET', '/v1/audit/events?event_type=launch_token_issued', { token: admin })).json.total as number;
  const created = async () => Number(/agentwrit_launch_tokens_created_total (\d+)/.exec((await http(b.url, 'GET', '/v1/metrics')).text)?.[1] ?? 0);
  const [auditBefore, countBefore] = [await issued(), await created()];
  const r = await http(b.url, 'POST', '/v1/admin/launch-tokens', { token: admin, json: { agent_name: 'a', allowed_scope: ['read:data:*'], ttl: 9_000_000_000_000 } });
  t.equal(r.status, 400);
  t.match(r.json, { error_code: 'invalid_request', detail: 'ttl is too large' });
  t.equal(await issued(), auditBefore, 'not audited as issued');
  t.equal(await created(), countBefore, 'not counted');
  const ok = await http(b.url, 'POST', '/v1/admin/launch-tokens', { token: admin, json: { agent_name: 'a', allowed_scope: ['read:data:*'], ttl: 60 } });
  t.equal(ok.status, 201, 'a sane ttl still works');
  t.equal(await created(), countBefore + 1);
});

t.test('an agent given app:launch-tokens:* by an app mints within that app\'s ceiling only', async (t) => {
  const b = await withBroker(t);
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const app = await createApp(b.url, admin, { name: 'ceilinged', scopes: ['read:data:x'] });
  const appToken = (await appAuth(b.url, app.clientId, app.clientSecret)).accessToken;
  const launch = await createLaunchToken(b.url, appToken, { agentName: 'x', allowedScope: ['read:data:x'] }, 'app');
  const agent = await registerAgent(b.url, { launchToken: launch.launchToken, orchId: 'o', taskId: 't', requestedScope: ['read:data:x'] });
  const handed = await delegate(b.url, appToken, { delegateTo: agent.agentId, scope: ['app:launch-tokens:*'] });
  const past = await http(b.url, 'POST', '/v1/app/launch-tokens', { token: handed.accessToken, json: { agent_name: 'evil', allowed_scope: ['admin:revoke:*'] } });
  t.equal(past.status, 403, 'past the ceiling of the app it came from');
  t.match(past.json, { error_code: 'forbidden', detail: /exceeds app ceiling/ });
  const within = await http(b.url, 'POST', '/v1/app/launch-tokens', { token: handed.accessToken, json: { agent_name: 'ok', allowed_scope: ['read:data:x'] } });
  t.equal(within.status, 201, 'within it: allowed, as for the app');
  const ceiling = await http(b.url, 'GET', `/v1/audit/events?event_type=scope_ceiling_exceeded`, { token: admin });
  t.equal(ceiling.json.total, 1, 'the attempt is audited');
  // Admin authority handed on stays admin authority.
  const byAdmin = await delegate(b.url, admin, { delegateTo: agent.agentId, scope: ['admin:launch-tokens:*'] });
  const adminMint = await http(b.url, 'POST', '/v1/admin/launch-tokens', { token: byAdmin.accessToken, json: { agent_name: 'y', allowed_scope: ['write:any:*'] } });
  t.equal(adminMint.status, 201);
});

t.test('memory a caller can make the broker keep is bounded: rate-limit keys and audit fields', async (t) => {
  const b = await withBroker(t);
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const hugeId = 'A'.repeat(200_000);
  const r = await http(b.url, 'POST', '/v1/app/auth', { json: { client_id: hugeId, client_secret: 'x' } });
  t.equal(r.status, 401);
  const longPath = `/v1/admin/apps/${'x'.repeat(50_000)}`;
  t.equal((await http(b.url, 'GET', longPath)).status, 401);
  const events = (await http(b.url, 'GET', '/v1/audit/events?limit=100', { token: admin })).json.events as Array<Record<string, string>>;
  const failed = events.find((e) => e.event_type === 'app_auth_failed')!;
  t.ok(failed.detail.length < 1200, `the detail is cut (${failed.detail.length} characters)`);
  t.match(failed.detail, /…\[\d+ more characters\]$/);
  const refused = events.find((e) => e.event_type === 'token_auth_failed')!;
  t.ok(refused.resource.length < 1200, `the resource is cut (${refused.resource.length} characters)`);
  t.ok(refused.resource.startsWith('/v1/admin/apps/xxx'));
  // The chain over cut fields still verifies.
  const { verifyAuditChain } = await import('../../src/broker/audit.js');
  const all = (await http(b.url, 'GET', '/v1/audit/events?limit=1000', { token: admin })).json.events;
  t.same(verifyAuditChain(all), { ok: true, count: all.length });
});

t.test('the scope label of agentwrit_tokens_issued_total takes a bounded number of values', async (t) => {
  const b = await withBroker(t);
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const lt = await createLaunchToken(b.url, admin, { agentName: 'a', allowedScope: ['read:data:*'] });
  const agent = await registerAgent(b.url, { launchToken: lt.launchToken, orchId: 'o', taskId: 't', requestedScope: ['read:data:*'] });
  const series = async () => (await http(b.url, 'GET', '/v1/metrics')).text.split('\n').filter((l) => l.startsWith('agentwrit_tokens_issued_total{'));
  const long = `read:data:${'z'.repeat(300)}`;
  await delegate(b.url, agent.accessToken, { delegateTo: agent.agentId, scope: [long] });
  t.ok((await series()).some((l) => l.startsWith('agentwrit_tokens_issued_total{scope="other"} 1')), 'a long scope is counted as other');
  for (let i = 0; i < 1010; i++) await delegate(b.url, agent.accessToken, { delegateTo: agent.agentId, scope: [`read:data:${i}`] });
  const all = await series();
  t.ok(all.length <= 1001, `at most 1,000 scopes and "other" (${all.length} series)`);
  const other = Number(/scope="other"} (\d+)/.exec(all.join('\n'))?.[1]);
  t.ok(other >= 10, `the rest counted as other (${other})`);
});
