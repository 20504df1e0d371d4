/**
 * App management and the app side of launch tokens (reference §2.4): shapes, validation, soft
 * delete, and the scope ceiling on the app route.
 */
import t from 'tap';
import { adminAuth, appAuth, createApp } from '../../src/broker/client.js';
import { ADMIN_SECRET, http, withBroker } from './fixture.js';

t.test('apps', async (t) => {
  const b = await withBroker(t);
  const url = b.url;
  const admin = (await adminAuth(url, ADMIN_SECRET)).accessToken;
  const post = (json: unknown) => http(url, 'POST', '/v1/admin/apps', { token: admin, json });

  t.test('validation', async (t) => {
    for (const name of ['Billing', '1bot', 'a', 'bot--x', 'bot-', '-bot', 'a-b', 'x'.repeat(65), `${'ab-'.repeat(30)}!`]) {
      const r = await post({ name, scopes: ['read:data:*'] });
      t.equal(r.status, 400, name);
      t.equal(r.json.error_code, 'invalid_request', name);
    }
    t.equal((await post({ name: 'ok-name', scopes: [] })).status, 400, 'scopes required');
    const badScope = await post({ name: 'ok-name', scopes: ['read:data'] });
    t.equal(badScope.status, 400);
    t.match(badScope.json.detail, /invalid scope format: read:data/);
    for (const ttl of [0, -5, 59, 86401]) {
      const r = await post({ name: 'ok-name', scopes: ['read:data:*'], token_ttl: ttl });
      t.equal(r.status, 400, `ttl ${ttl}`);
      t.equal(r.json.error_code, 'invalid_ttl');
    }
    t.equal((await post({ name: 'ok-name', scopes: ['read:data:*'], token_ttl: 1.5 })).json.detail, 'malformed JSON body', 'ttl must be an integer');
    t.equal((await http(url, 'GET', '/v1/admin/apps', { token: admin })).json.total, 0, 'nothing was created');
  });

  t.test('create, list, get, update, delete', async (t) => {
    const created = await post({ name: 'support-desk-helper-x', scopes: ['read:tickets:*'] });
    t.equal(created.status, 201);
    t.equal(created.json.token_ttl, 1800, 'default app token TTL');
    t.match(created.json.client_id, /^sdh-[0-9a-f]{12}$/);
    const id = created.json.app_id;
    const dup = await post({ name: 'support-desk-helper-x', scopes: ['read:tickets:*'] });
    t.equal(dup.status, 500, 'duplicate names surface as 500, as in the broker (no 409)');

    const list = await http(url, 'GET', '/v1/admin/apps', { token: admin });
    t.equal(list.json.total, 1);
    t.same(Object.keys(list.json.apps[0]), ['app_id', 'name', 'client_id', 'scopes', 'token_ttl', 'status', 'created_at', 'updated_at']);
    t.match(list.json.apps[0], { app_id: id, name: 'support-desk-helper-x', status: 'active', scopes: ['read:tickets:*'] });
    t.match(list.json.apps[0].created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    t.same((await http(url, 'GET', `/v1/admin/apps/${id}`, { token: admin })).json, list.json.apps[0]);
    const missing = await http(url, 'GET', '/v1/admin/apps/app-none-000000', { token: admin });
    t.equal(missing.status, 404);
    t.equal(missing.json.error_code, 'not_found');

    t.equal((await http(url, 'PUT', `/v1/admin/apps/${id}`, { token: admin, json: {} })).status, 400, 'nothing to update');
    const badTtl = await http(url, 'PUT', `/v1/admin/apps/${id}`, { token: admin, json: { scopes: ['read:kb:*'], token_ttl: 5 } });
    t.equal(badTtl.json.error_code, 'invalid_ttl');
    t.same((await http(url, 'GET', `/v1/admin/apps/${id}`, { token: admin })).json.scopes, ['read:tickets:*'], 'a failed update changes nothing');
    const upd = await http(url, 'PUT', `/v1/admin/apps/${id}`, { token: admin, json: { scopes: ['read:tickets:*', 'read:kb:*'], token_ttl: 120 } });
    t.equal(upd.status, 200);
    t.match(upd.json, { scopes: ['read:tickets:*', 'read:kb:*'], token_ttl: 120 });

    const app = await appAuth(url, created.json.client_id, created.json.client_secret);
    t.equal(app.expiresIn, 120);
    const del = await http(url, 'DELETE', `/v1/admin/apps/${id}`, { token: admin });
    t.equal(del.status, 200);
    t.same(Object.keys(del.json), ['app_id', 'name', 'client_id', 'scopes', 'token_ttl', 'status', 'deregistered_at']);
    t.match(del.json, { app_id: id, name: '', client_id: '', scopes: null, token_ttl: 0, status: 'inactive' });
    const after = await http(url, 'POST', '/v1/app/auth', { json: { client_id: created.json.client_id, client_secret: created.json.client_secret } });
    t.equal(after.status, 401, 'a deregistered app cannot authenticate');
    t.equal(after.json.detail, 'Authentication failed');
    const lt = await http(url, 'POST', '/v1/app/launch-tokens', { token: app.accessToken, json: { agent_name: 'x', allowed_scope: ['read:kb:*'] } });
    t.equal(lt.status, 201, "its unexpired JWT still creates launch tokens (status is not checked, as in the broker)");
    t.equal((await http(url, 'GET', `/v1/admin/apps/${id}`, { token: admin })).json.status, 'inactive');
  });

  t.test('app route: ceiling, gates and audit', async (t) => {
    const app = await createApp(url, admin, { name: 'ceiling', scopes: ['read:billing:*', 'write:billing:customer-1'] });
    const tok = (await appAuth(url, app.clientId, app.clientSecret)).accessToken;
    const lt = (allowed: string[]) => http(url, 'POST', '/v1/app/launch-tokens', { token: tok, json: { agent_name: 'w', allowed_scope: allowed } });
    t.equal((await lt(['read:billing:customer-9', 'write:billing:customer-1'])).status, 201);
    const over = await lt(['write:billing:customer-2']);
    t.equal(over.status, 403);
    t.equal(over.json.error_code, 'forbidden');
    t.equal((await lt(['write:billing:*'])).status, 403, 'a wildcard is not covered by a specific identifier');
    const missingName = await http(url, 'POST', '/v1/app/launch-tokens', { token: tok, json: { allowed_scope: ['read:billing:x'] } });
    t.equal(missingName.status, 400);
    t.equal(missingName.json.detail, 'agent_name is required');

    const adminOnApp = await http(url, 'POST', '/v1/app/launch-tokens', { token: admin, json: { agent_name: 'w', allowed_scope: ['read:billing:x'] } });
    t.equal(adminOnApp.status, 403);
    t.equal(adminOnApp.json.error_code, 'insufficient_scope');
    const appOnAdmin = await http(url, 'POST', '/v1/admin/launch-tokens', { token: tok, json: { agent_name: 'w', allowed_scope: ['read:billing:x'] } });
    t.equal(appOnAdmin.status, 403);
    t.equal((await http(url, 'GET', '/v1/audit/events', { token: tok })).status, 403, 'app:audit:read does not open the audit log');
    t.equal((await http(url, 'GET', '/v1/admin/apps', { token: tok })).status, 403);

    const adminWide = await http(url, 'POST', '/v1/admin/launch-tokens', { token: admin, json: { agent_name: 'w', allowed_scope: ['*:*:*', 'anything'] } });
    t.equal(adminWide.status, 201, 'the admin route has no ceiling and no format check');
    t.same(adminWide.json.policy, { allowed_scope: ['*:*:*', 'anything'], max_ttl: 300 });

    const ev = await http(url, 'GET', '/v1/audit/events?event_type=scope_ceiling_exceeded', { token: admin });
    t.equal(ev.json.total, 2);
    t.equal(ev.json.events[0].agent_id, `app:${app.appId}`);
    const denied = await http(url, 'GET', '/v1/audit/events?event_type=launch_token_denied', { token: admin });
    t.equal(denied.json.events[0].agent_id, `app:${app.appId}`);
  });
});
