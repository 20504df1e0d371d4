/**
 * Transport behaviour clients can observe (reference §1): routing answers, request ids, security
 * headers, problem+json layout, public endpoints, audience/issuer enforcement, audit queries.
 */
import { request } from 'node:http';
import t from 'tap';
import { adminAuth, createLaunchToken, registerAgent } from '../../src/broker/client.js';
import { ADMIN_SECRET, http, payload, withBroker } from './fixture.js';

/** A request with the path sent exactly as given (URL-based clients remove dot segments). */
function rawGet(base: string, path: string): Promise<{ status: number; location: string | undefined }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('routing: 404, 405 with Allow, HEAD, path cleaning', async (t) => {
  const b = await withBroker(t);
  const nf = await http(b.url, 'GET', '/v1/nope');
  t.equal(nf.status, 404);
  t.equal(nf.text, '404 page not found\n');
  t.equal(nf.headers['content-type'], 'text/plain; charset=utf-8');
  t.equal(nf.headers['x-content-type-options'], 'nosniff');
  t.equal((await http(b.url, 'GET', '/v1/health/')).status, 404, 'no trailing-slash match');
  t.equal((await http(b.url, 'GET', '/v1/admin/apps/')).status, 404, 'a wildcard needs a non-empty segment');

  const cases: Array<[string, string, string]> = [
    ['GET', '/v1/register', 'POST'],
    ['POST', '/v1/health', 'GET, HEAD'],
    ['DELETE', '/v1/admin/apps', 'GET, HEAD, POST'],
    ['PATCH', '/v1/admin/apps/app-x-000000', 'DELETE, GET, HEAD, PUT'],
  ];
  for (const [method, path, allow] of cases) {
    const r = await http(b.url, method, path);
    t.equal(r.status, 405, `${method} ${path}`);
    t.equal(r.headers.allow, allow);
    t.equal(r.text, 'Method Not Allowed\n');
  }

  const head = await http(b.url, 'HEAD', '/v1/health');
  t.equal(head.status, 200);
  t.equal(head.text, '');
  t.equal(head.headers['content-type'], 'application/json');

  const dirty = await rawGet(b.url, '/v1/./admin/../health?x=1');
  t.equal(dirty.status, 301);
  t.equal(dirty.location, '/v1/health?x=1');
  t.same(await rawGet(b.url, '//v1/health'), { status: 301, location: '/v1/health' });
  t.same(await rawGet(b.url, '/v1/admin/apps/a%2F..'), { status: 301, location: '/v1/admin/apps' }, 'cleaned after decoding, as Go does');
  // The Location is escaped again as Go's url.URL writes a path; characters a header cannot carry never reach it.
  t.same(await rawGet(b.url, '/v1/a%20b/./?q=1'), { status: 301, location: '/v1/a%20b/?q=1' });
  t.same(await rawGet(b.url, '/v1/caf%C3%A9/./'), { status: 301, location: '/v1/caf%C3%A9/' });
  t.same(await rawGet(b.url, '/v1/x%E2%82%AC/./'), { status: 301, location: '/v1/x%E2%82%AC/' });
  t.same(await rawGet(b.url, '/v1/x%0d%0aSet-Cookie:%20a/./'), { status: 301, location: '/v1/x%0D%0ASet-Cookie:%20a/' });
  t.same(await rawGet(b.url, "/v1/$&+,:;=@-_.~!*'()/./"), { status: 301, location: "/v1/$&+,:;=@-_.~%21%2A%27%28%29/" });
});

t.test('request id, security headers and problem layout', async (t) => {
  const b = await withBroker(t);
  const given = await http(b.url, 'GET', '/v1/health', { headers: { 'x-request-id': 'client chosen id!' } });
  t.equal(given.headers['x-request-id'], 'client chosen id!', 'echoed verbatim');
  const generated = await http(b.url, 'GET', '/v1/health');
  t.match(generated.headers['x-request-id'], /^[0-9a-f]{16}$/);
  t.equal(generated.headers['x-content-type-options'], 'nosniff');
  t.equal(generated.headers['cache-control'], 'no-store');
  t.equal(generated.headers['x-frame-options'], 'DENY');
  t.notOk(generated.headers['strict-transport-security'], 'no HSTS without TLS');

  const p = await http(b.url, 'POST', '/v1/revoke?ignored=1', { json: {}, headers: { 'x-request-id': 'rid-7' } });
  t.equal(p.status, 401);
  t.equal(p.headers['content-type'], 'application/problem+json');
  t.equal(p.headers['cache-control'], 'no-store');
  t.equal(
    p.text,
    '{"type":"urn:agentwrit:error:unauthorized","title":"Unauthorized","status":401,"detail":"missing authorization header","instance":"/v1/revoke","error_code":"unauthorized","request_id":"rid-7"}\n',
  );
});

t.test('public endpoints: health, metrics, jwks, challenge', async (t) => {
  const b = await withBroker(t);
  const h = await http(b.url, 'GET', '/v1/health');
  t.same(Object.keys(h.json), ['status', 'version', 'uptime', 'db_connected', 'audit_events_count']);
  t.same(h.json, { status: 'ok', version: '2.0.0', uptime: 0, db_connected: true, audit_events_count: 0 });
  await adminAuth(b.url, ADMIN_SECRET);
  const m = await http(b.url, 'GET', '/v1/metrics');
  t.equal(m.status, 200);
  t.match(m.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  t.match(m.text, /agentwrit_tokens_issued_total\{scope="admin:launch-tokens:\*"\} 1/);
  t.match(m.text, /agentwrit_admin_auth_total\{status="success"\} 1/);
  t.match(m.text, /agentwrit_audit_events_total\{event_type="admin_auth"\} 1/);
  t.match(m.text, /# TYPE agentwrit_clock_skew_total counter/);
  const j = await http(b.url, 'GET', '/.well-known/jwks.json');
  t.equal(j.status, 200);
  t.equal(j.json.keys.length, 1);
  t.same(Object.keys(j.json.keys[0]), ['kty', 'crv', 'x', 'kid', 'alg', 'use']);
  t.match(j.json.keys[0], { kty: 'OKP', crv: 'Ed25519', kid: b.kid, alg: 'EdDSA', use: 'sig' });
  const n1 = (await http(b.url, 'GET', '/v1/challenge')).json.nonce;
  const n2 = (await http(b.url, 'GET', '/v1/challenge')).json.nonce;
  t.not(n1, n2);
});

t.test('issuer and audience', async (t) => {
  const dir = t.testdir();
  const keyFile = `${dir}/signing.key`;
  const plain = await withBroker(t, { signingKeyFile: keyFile });
  const withAud = await withBroker(t, { signingKeyFile: keyFile, audience: 'sidecar', issuer: 'https://broker.test' });
  t.equal(plain.kid, withAud.kid, 'same key file, same kid');

  const audToken = (await adminAuth(withAud.url, ADMIN_SECRET)).accessToken;
  const c = payload(audToken);
  t.equal(c.iss, 'https://broker.test');
  t.same(c.aud, ['sidecar']);
  t.same(Object.keys(c).slice(0, 3), ['iss', 'sub', 'aud']);
  t.equal((await http(withAud.url, 'GET', '/v1/audit/events', { token: audToken })).status, 200);

  // A token without aud/iss from the same key: refused by the issuer check on validate ...
  const bare = (await adminAuth(plain.url, ADMIN_SECRET)).accessToken;
  t.same((await http(withAud.url, 'POST', '/v1/token/validate', { json: { token: bare } })).json.valid, false);
  // ... and by the audience check on Bearer endpoints of a broker with only an audience.
  const audOnly = await withBroker(t, { signingKeyFile: keyFile, audience: 'sidecar' });
  t.equal((await http(audOnly.url, 'POST', '/v1/token/validate', { json: { token: bare } })).json.valid, true, 'validate ignores aud');
  const refused = await http(audOnly.url, 'GET', '/v1/audit/events', { token: bare });
  t.equal(refused.status, 401);
  t.equal(refused.json.detail, 'token audience mismatch');
});

t.test('audit query: filters, paging, gate', async (t) => {
  let clock = Date.parse('2030-01-01T00:00:00Z');
  const b = await withBroker(t, { now: () => clock });
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  clock += 1000;
  const lt = await createLaunchToken(b.url, admin, { agentName: 'a', allowedScope: ['read:data:*'] });
  clock += 1000;
  const agent = await registerAgent(b.url, { launchToken: lt.launchToken, orchId: 'o', taskId: 'tq', requestedScope: ['read:data:*'] });
  const q = (s: string) => http(b.url, 'GET', `/v1/audit/events${s}`, { token: admin }).then((r) => r.json);

  const all = await q('');
  t.equal(all.total, 4);
  t.same(all.events.map((e: { id: string }) => e.id), ['evt-000001', 'evt-000002', 'evt-000003', 'evt-000004']);
  t.equal(all.limit, 100);
  t.equal(all.offset, 0);
  t.equal(all.events[0].timestamp, '2030-01-01T00:00:00Z');
  t.same((await q(`?agent_id=${encodeURIComponent(agent.agentId)}`)).events.map((e: { event_type: string }) => e.event_type), ['agent_registered', 'token_issued']);
  t.equal((await q('?task_id=tq')).total, 2);
  t.equal((await q('?event_type=launch_token_issued')).total, 1);
  t.equal((await q('?outcome=denied')).total, 0);
  t.equal((await q('?since=2030-01-01T00:00:01Z')).total, 3, 'since is inclusive');
  t.equal((await q('?until=2030-01-01T00:00:01Z')).total, 2, 'until is inclusive');
  t.equal((await q('?since=2030-01-01T01:00:01%2B01:00')).total, 3, 'offsets are honoured');
  t.equal((await q('?since=yesterday')).total, 4, 'unparseable times are ignored');
  const page = await q('?limit=2&offset=1');
  t.same([page.total, page.offset, page.limit, page.events.length], [4, 1, 2, 2]);
  t.equal(page.events[0].id, 'evt-000002');
  t.equal((await q('?limit=5000')).limit, 5000, 'the echoed limit is not clamped');
  t.equal((await q('?limit=abc')).limit, 100, 'a non-numeric limit is ignored');

  const lt2 = await createLaunchToken(b.url, admin, { agentName: 'b', allowedScope: ['read:data:*'] });
  const other = await registerAgent(b.url, { launchToken: lt2.launchToken, orchId: 'o', taskId: 'tq2', requestedScope: ['read:data:*'] });
  const gate = await http(b.url, 'GET', '/v1/audit/events', { token: other.accessToken });
  t.equal(gate.status, 403);
  t.equal(gate.json.error_code, 'insufficient_scope');
  t.equal(gate.json.detail, 'token lacks required scope: admin:audit:*');
  const violation = await q('?event_type=scope_violation');
  t.equal(violation.events[0].agent_id, other.agentId);
  t.equal(violation.events[0].resource, '/v1/audit/events');
  t.equal(violation.events[0].outcome, 'denied');
});
