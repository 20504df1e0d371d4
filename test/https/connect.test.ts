/**
 * CONNECT on the proxy port: interception with the sidecar's CA, pass-through, refusals before
 * TLS, and upstream TLS verification. Real sockets and an HTTPS upstream with its own CA.
 */
import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { ProxyAgent, request } from 'undici';
import { connectRequest, eventually, rawRequest, SECRET, startHttpsFixture } from '../helpers/https-fixture.js';
import type { SeenRequest } from '../helpers/https-upstream.js';

// A route on an explicit port 443: https only (the scheme is implied by the port).
const fx = await startHttpsFixture({
  extraRoutes: (up) => [
    { id: 'tls-only', host: 'api.example.com', port: 443, methods: ['GET'], path: '/tls-only/{customer}', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api', caFile: up.caFile },
  ],
});
t.teardown(() => fx.close());
const token = await fx.token();
const agent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}`, requestTls: { ca: fx.caPem } });
t.teardown(() => agent.close());

/** CONNECT, then TLS over the tunnel with the given name and trust. */
async function tunnelTls(target: string, servername: string, ca: string, tok = token): Promise<TLSSocket> {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest(target, tok));
  if (r.status !== 200) throw new Error(`CONNECT answered ${r.status}`);
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ socket: r.socket, servername, ca, ALPNProtocols: ['http/1.1'] }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Plain HTTP on an open tunnel: writes `request`, resolves with all that comes back until the close. */
function plainExchange(socket: Socket, request: string): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    socket.on('data', (c: Buffer) => {
      buf += c.toString();
    });
    socket.once('close', () => resolve(buf));
    socket.write(request);
  });
}

/** One HTTP/1.1 exchange on an open socket; resolves with status and body once the server closes. */
function exchange(s: TLSSocket, head: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString();
    });
    s.once('error', reject);
    s.once('close', () => {
      const end = buf.indexOf('\r\n\r\n');
      resolve({ status: Number(buf.split(' ')[1]), body: buf.slice(end + 4) });
    });
    s.write(head);
  });
}

t.test('intercepted HTTPS: the upstream gets the injected credential, never the agent token', async (t) => {
  const r = await request('https://api.example.com/customers/12345/billing', { dispatcher: agent, headers: { cookie: 'session=agent' } });
  t.equal(r.statusCode, 200);
  const seen = (await r.body.json()) as SeenRequest;
  t.equal(seen.scheme, 'https', 'TLS towards the upstream too');
  t.equal(seen.servername, 'api.example.com', 'SNI set towards the upstream');
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  t.equal(seen.headers.cookie, undefined);
  t.equal(seen.headers['proxy-authorization'], undefined);
  t.notOk(JSON.stringify(seen).includes(token), 'agent token not forwarded anywhere');
  t.ok(r.headers['x-request-id']);
});

t.test('requests inside an intercepted tunnel carry its CONNECT request id; its close counts bytes', async (t) => {
  const own = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}`, requestTls: { ca: fx.caPem } });
  const ids: string[] = [];
  for (const path of ['/customers/12345/billing', '/customers/67890/billing']) {
    const r = await request(`https://api.example.com${path}`, { dispatcher: own });
    await r.body.dump();
    ids.push(r.headers['x-request-id'] as string);
  }
  await own.close();
  await eventually(async () => (await fx.audit()).filter((r) => ids.includes(r.request_id as string)).length === 2);
  let records = await fx.audit();
  const inner = ids.map((id) => records.find((r) => r.request_id === id)!);
  t.match(inner, [{ type: 'request', decision: 'allow' }, { type: 'request', decision: 'deny', error_code: 'scope_violation' }]);
  // undici may open a second tunnel for the second request; each names the one it came through.
  const tunnelIds = inner.map((r) => r.tunnel_id as string);
  for (const id of tunnelIds) {
    t.type(id, 'string');
    t.match(records.find((r) => r.request_id === id && r.type === 'tunnel'), { outcome: 'intercepted', host: 'api.example.com', port: 443 }, 'the CONNECT decision’s id');
  }
  const closedOf = (id: string) => records.find((r) => r.request_id === id && r.type === 'tunnel_closed');
  await eventually(async () => {
    records = await fx.audit();
    return tunnelIds.every((id) => closedOf(id) !== undefined);
  });
  const closed = closedOf(tunnelIds[0])!;
  t.equal(closed.outcome, 'intercepted');
  t.ok((closed.bytes_in as number) > 300, 'TLS handshake and the request from the agent counted');
  t.ok((closed.bytes_out as number) > 1000, 'certificate and answer towards the agent counted');
  const loggedNow = () => fx.sc.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => ids.includes(l.request_id as string));
  await eventually(async () => loggedNow().length === ids.length);
  const logged = loggedNow();
  t.same(
    logged.map((l) => l.tunnel_id),
    tunnelIds,
    'request log lines carry it too',
  );

  const plainAgent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}`, proxyTunnel: false });
  const plain = await request('http://api.example.com/customers/12345/billing', { dispatcher: plainAgent });
  await plain.body.dump();
  await plainAgent.close();
  const plainId = plain.headers['x-request-id'] as string;
  await eventually(async () => (await fx.audit()).some((r) => r.request_id === plainId));
  t.notOk('tunnel_id' in (await fx.audit()).find((r) => r.request_id === plainId)!, 'no tunnel_id outside a tunnel');
});

t.test('inside the tunnel, paths the token does not cover are refused', async (t) => {
  const other = await request('https://api.example.com/customers/67890/billing', { dispatcher: agent });
  t.equal(other.statusCode, 403);
  t.match(other.headers['content-type'], /application\/problem\+json/);
  t.equal(((await other.body.json()) as { error_code: string }).error_code, 'scope_violation');
  const none = await request('https://api.example.com/admin/users', { dispatcher: agent });
  t.equal(none.statusCode, 403);
  t.equal(((await none.body.json()) as { error_code: string }).error_code, 'no_route');
});

t.test("an inner request's own bearer token wins over the CONNECT token, and is stripped", async (t) => {
  const weak = await fx.token(['read:any:*']);
  const weakAgent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${weak}`, requestTls: { ca: fx.caPem } });
  t.teardown(() => weakAgent.close());
  const denied = await request('https://api.example.com/customers/12345/billing', { dispatcher: weakAgent });
  t.equal(denied.statusCode, 403, 'the CONNECT token alone lacks the scope');
  await denied.body.dump();
  const ok = await request('https://api.example.com/customers/12345/billing', { dispatcher: weakAgent, headers: { authorization: `Bearer ${token}` } });
  t.equal(ok.statusCode, 200);
  const seen = (await ok.body.json()) as SeenRequest;
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  t.notOk(JSON.stringify(seen).includes(token));
});

t.test('CONNECT without a token: 407 with Proxy-Authenticate, problem+json, no TLS', async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443'), { untilClose: true });
  t.equal(r.status, 407);
  t.match(r.head, /proxy-authenticate: Bearer realm="agentwrit-sidecar", Basic realm="agentwrit-sidecar"/i);
  t.match(r.head, /content-type: application\/problem\+json/i);
  const p = JSON.parse(r.body);
  t.equal(p.error_code, 'token_required');
  t.equal(p.status, 407);
  t.ok(p.request_id);
});

t.test('CONNECT with a bad token: 401', async (t) => {
  const garbled = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', 'not-a-token'), { untilClose: true });
  t.equal(garbled.status, 401);
  t.equal(JSON.parse(garbled.body).error_code, 'token_invalid');
  const forged = `${token.slice(0, -4)}AAAA`;
  const bad = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', forged), { untilClose: true });
  t.equal(bad.status, 401);
});

t.test('Basic proxy credentials with the token as password open the tunnel', async (t) => {
  const basic = Buffer.from(`agent:${token}`).toString('base64');
  const r = await rawRequest(fx.sc.proxyPort, `CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Authorization: Basic ${basic}\r\n\r\n`);
  t.equal(r.status, 200);
  t.match(r.head, /x-request-id: /i);
  r.socket.destroy();
});

t.test('unknown hosts, IP literals and unlisted ports are refused with 403 before TLS', async (t) => {
  for (const target of ['evil.example.net:443', '127.0.0.1:443', '[::1]:443', 'api.example.com:8443', 'pass.example.com:8443']) {
    const r = await rawRequest(fx.sc.proxyPort, connectRequest(target, token), { untilClose: true });
    t.equal(r.status, 403, target);
    t.equal(JSON.parse(r.body).error_code, 'tunnel_refused', target);
  }
  const bad = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com', token), { untilClose: true });
  t.equal(bad.status, 400, 'a CONNECT target needs a port');
  const records = await fx.audit();
  const refused = records.filter((r) => r.type === 'tunnel' && r.outcome === 'refused' && r.host === 'evil.example.net');
  t.equal(refused.length, 1, 'refusal audited');
  t.match(refused[0], { decision: 'deny', error_code: 'tunnel_refused', method: 'CONNECT', port: 443 });
  t.ok(refused[0].sub, 'the authenticated agent is named');
});

t.test('pass-through: a blind tunnel with the scope (the agent sees the real certificate), 403 without', async (t) => {
  const s = await tunnelTls('pass.example.com:443', 'pass.example.com', fx.up.caPem);
  const issuer = new X509Certificate(s.getPeerX509Certificate()!.raw).issuer;
  t.equal(issuer, new X509Certificate(fx.up.caPem).subject, 'upstream certificate, not a sidecar leaf');
  const r = await exchange(s, 'GET /hello HTTP/1.1\r\nHost: pass.example.com\r\nConnection: close\r\n\r\n');
  t.equal(r.status, 200);
  const seen = JSON.parse(r.body) as SeenRequest;
  t.equal(seen.url, '/hello');
  t.equal(seen.headers.authorization, undefined, 'nothing injected into a blind tunnel');
  await eventually(async () => (await fx.audit()).some((r) => r.type === 'tunnel_closed' && r.host === 'pass.example.com'));
  const records = await fx.audit();
  t.match(
    records.find((r) => r.type === 'tunnel' && r.host === 'pass.example.com' && r.port === 443),
    { outcome: 'passed_through', decision: 'allow', scopes: ['tunnel:pass:any'], port: 443 },
  );
  const closed = records.find((r) => r.type === 'tunnel_closed' && r.host === 'pass.example.com')!;
  t.equal(closed.outcome, 'passed_through');
  t.ok((closed.bytes_in as number) > 200, 'bytes from the agent counted');
  t.ok((closed.bytes_out as number) > 500, 'bytes from the upstream counted');
  t.type(closed.duration_ms, 'number');

  const weak = await fx.token(['read:billing:customer-12345']);
  const denied = await rawRequest(fx.sc.proxyPort, connectRequest('pass.example.com:443', weak), { untilClose: true });
  t.equal(denied.status, 403);
  t.equal(JSON.parse(denied.body).error_code, 'scope_violation');
});

t.test('a CONNECT inside an intercepted tunnel: 400 problem+json, audited with the tunnel', async (t) => {
  const s = await tunnelTls('api.example.com:443', 'api.example.com', fx.caPem);
  const r = await exchange(s, 'CONNECT other.example.com:443 HTTP/1.1\r\nHost: other.example.com:443\r\n\r\n');
  t.equal(r.status, 400);
  const problem = JSON.parse(r.body) as { error_code: string; detail: string; request_id: string };
  t.same([problem.error_code, problem.detail], ['bad_request', 'CONNECT inside a tunnel is not supported']);
  const records = await fx.audit();
  const rec = records.find((x) => x.request_id === problem.request_id);
  t.match(rec, { type: 'request', decision: 'deny', error_code: 'bad_request' });
  t.ok(typeof rec?.tunnel_id === 'string', 'with the id of the CONNECT that opened the tunnel');
});

t.test('no domain fronting: the inner Host must be the CONNECT host', async (t) => {
  const s = await tunnelTls('api.example.com:443', 'api.example.com', fx.caPem);
  const r = await exchange(s, 'GET /customers/12345/billing HTTP/1.1\r\nHost: untrusted.example.com\r\nConnection: close\r\n\r\n');
  t.equal(r.status, 400);
  t.equal(JSON.parse(r.body).error_code, 'ambiguous_request');
});

t.test('the leaf names exactly the CONNECT host and chains to the sidecar CA', async (t) => {
  const s = await tunnelTls('api.example.com:443', 'api.example.com', fx.caPem);
  const leaf = new X509Certificate(s.getPeerX509Certificate()!.raw);
  t.equal(leaf.subjectAltName, 'DNS:api.example.com');
  t.ok(leaf.checkIssued(new X509Certificate(fx.caPem)));
  t.equal(s.alpnProtocol, 'http/1.1');
  s.destroy();
});

t.test('plain HTTP inside a CONNECT tunnel (as undici sends http:// URLs) is read with scheme http', async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:80', token));
  t.equal(r.status, 200);
  const answer = await plainExchange(r.socket, 'GET /customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n');
  t.match(answer, /^HTTP\/1\.1 200 /);
  const seen = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as SeenRequest;
  t.equal(seen.scheme, 'http', 'sent to the plain HTTP upstream');
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
});

t.test('a route on port 443 takes https only: plain HTTP to that port, direct or tunnelled, is refused before the upstream', async (t) => {
  const seenBefore = fx.up.received.length;
  const direct = await rawRequest(
    fx.sc.proxyPort,
    `GET http://api.example.com:443/tls-only/12345 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Authorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
    { untilClose: true },
  );
  t.equal(direct.status, 403, 'absolute-form http:// to port 443');
  t.equal((JSON.parse(direct.body) as { error_code: string }).error_code, 'no_route');

  const tunnel = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', token));
  t.equal(tunnel.status, 200);
  const answer = await plainExchange(tunnel.socket, 'GET /tls-only/12345 HTTP/1.1\r\nHost: api.example.com:443\r\nConnection: close\r\n\r\n');
  t.match(answer, /^HTTP\/1\.1 403 /, 'plain HTTP inside a tunnel to port 443');
  t.match(answer, /"error_code":"no_route"/);
  t.equal(fx.up.received.length, seenBefore, 'nothing reached an upstream');

  const viaTls = await request('https://api.example.com/tls-only/12345', { dispatcher: agent });
  t.equal(viaTls.statusCode, 200, 'the same route over https is served');
  const seen = (await viaTls.body.json()) as SeenRequest;
  t.same([seen.scheme, seen.headers.authorization], ['https', `Bearer ${SECRET}`]);
});

t.test('an upstream whose certificate is not trusted: 502 upstream_tls_error, never a downgrade', async (t) => {
  const before = fx.up.received.length;
  const r = await request('https://untrusted.example.com/x', { dispatcher: agent });
  t.equal(r.statusCode, 502);
  t.equal(((await r.body.json()) as { error_code: string }).error_code, 'upstream_tls_error');
  t.equal(fx.up.received.length, before, 'nothing reached the upstream');
});

t.test('CA files for agents: the certificate and a bundle with the system CAs, never the key', async (t) => {
  const cert = readFileSync(fx.caCertFile, 'utf8');
  const bundle = readFileSync(fx.bundleFile, 'utf8');
  t.notMatch(cert, /PRIVATE KEY/);
  t.notMatch(bundle, /PRIVATE KEY/);
  t.equal(new X509Certificate(cert).fingerprint256, fx.sc.tls.caFingerprint256);
  t.ok(bundle.includes(cert.trim()), 'bundle holds the sidecar CA');
  t.ok((bundle.match(/BEGIN CERTIFICATE/g) ?? []).length > 100, 'bundle holds the system CAs');
});

t.test('metrics: tunnels by outcome, active tunnels, leaf mints', async (t) => {
  const m = await fx.metrics();
  t.match(m, /agentwrit_sidecar_tunnels_total\{outcome="intercepted"\} [1-9]/);
  t.match(m, /agentwrit_sidecar_tunnels_total\{outcome="passed_through"\} [1-9]/);
  t.match(m, /agentwrit_sidecar_tunnels_total\{outcome="refused"\} [1-9]/);
  t.match(m, /agentwrit_sidecar_leaf_certificates_minted_total [1-9]/);
  t.match(m, /agentwrit_sidecar_leaf_mint_duration_seconds_count [1-9]/);
  t.match(m, /agentwrit_sidecar_active_tunnels \d/);
});
