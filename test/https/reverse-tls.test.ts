/**
 * Reverse routes to https:// upstreams: TLS origination from the sidecar, the upstream certificate
 * verified against the route's CA file, SNI set to the upstream name, and no fallback when the
 * certificate does not verify.
 */
import t from 'tap';
import { request } from 'undici';
import { SECRET, startHttpsFixture } from '../helpers/https-fixture.js';

const route = { upstream: 'https://api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api' };
const fx = await startHttpsFixture({
  extraRoutes: (up) => [
    { id: 'billing-rev-untrusted', mount: '/billing', ...route },
    { id: 'billing-rev-tls', mount: '/billing-tls', ...route, caFile: up.caFile },
  ],
});
t.teardown(() => fx.close());

t.test('reverse route to an https upstream whose CA is not trusted: 502, never a downgrade', async (t) => {
  // This route carries no caFile, and trust is per route: the upstream's private CA, named by other
  // routes to the same origin, does not apply here, so the certificate does not verify.
  const tok = await fx.token(['read:billing:customer-12345']);
  const res = await request(`${fx.sc.proxyUrl}/billing/customers/12345/billing`, { headers: { authorization: `Bearer ${tok}` } });
  const body = (await res.body.json()) as { error_code?: string };
  t.equal(res.statusCode, 502, 'an upstream certificate from an unknown CA is refused');
  t.equal(body.error_code, 'upstream_tls_error');
});

t.test('with the route CA: verified TLS, SNI, injected key, no agent token', async (t) => {
  const tok = await fx.token(['read:billing:customer-12345']);
  const res = await request(`${fx.sc.proxyUrl}/billing-tls/customers/12345/billing`, { headers: { authorization: `Bearer ${tok}` } });
  const text = await res.body.text();
  const body = JSON.parse(text) as { scheme: string; servername?: string; url: string; headers: Record<string, string> };
  t.equal(res.statusCode, 200, text);
  t.equal(body.scheme, 'https');
  t.equal(body.servername, 'api.example.com');
  t.equal(body.url, '/customers/12345/billing');
  t.equal(body.headers.authorization, `Bearer ${SECRET}`);
  t.notOk(text.includes(tok), 'agent token not forwarded');
  const wrong = await request(`${fx.sc.proxyUrl}/billing-tls/customers/999/billing`, { headers: { authorization: `Bearer ${tok}` } });
  t.equal(wrong.statusCode, 403);
  await wrong.body.dump();
});
