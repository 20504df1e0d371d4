/**
 * End-to-end over loopback: a real upstream, the sidecar in-process, offline verification with a
 * key on disk, and real HTTP clients (undici through the proxy, curl, raw sockets for hostile input).
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { Pool, ProxyAgent, request } from 'undici';
import { makeKey, signToken } from '../helpers/tokens.js';
import { type Received, startUpstream } from '../helpers/upstream.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const SECRET = 'sk-live-billing-SECRET-123';

const key = await makeKey();
const upstream = await startUpstream();
const dirKey = join(tempDir('aws-fwd-'), 'broker-public.pem');
writeFileSync(dirKey, key.publicPem);
const POLICY = {
  version: 'v1',
  connectors: [
    { name: 'billing-api', type: 'static', secret: { env: 'BILLING_API_KEY' }, header: 'Authorization', format: 'Bearer ${secret}' },
    { name: 'query-key', type: 'static', secret: { env: 'BILLING_API_KEY' }, query: 'api_key' },
  ],
  routes: [
    { id: 'billing-read', host: 'api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api' },
    { id: 'refund', host: 'api.example.com', methods: ['POST'], path: '/customers/{customer}/refunds', scopes: ['write:billing:customer-{customer}'], connector: 'billing-api' },
    { id: 'search', host: 'api.example.com', methods: ['GET'], path: '/search', scopes: ['read:search:*'], connector: 'query-key' },
    { id: 'files', host: 'api.example.com', methods: ['GET'], path: '/files/{rest*}', scopes: ['read:files:{rest}'], connector: 'billing-api' },
    { id: 'deep', host: 'api.example.com', methods: ['GET'], path: '/deep', scopes: ['read:deep:x'], maxDelegationDepth: 0 },
    { id: 'rev', mount: '/billing', upstream: 'http://api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api' },
  ],
};
const sc = await startTestSidecar({
  upstreamPort: upstream.port,
  broker: { verify: 'offline', publicKeyFile: dirKey },
  policies: [POLICY],
});
t.teardown(async () => {
  await sc.close();
  await upstream.close();
});

const good = await signToken(key, { scope: ['read:billing:customer-12345', 'write:billing:customer-12345', 'read:files:a/b.txt', 'read:search:*', 'read:deep:x'] });
const proxy = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false });

/** A sidecar of its own on the same key, policy and upstream, with `config` sections merged in; closed at teardown. */
async function sidecarWith(t: Test, config: Record<string, unknown>, upstreamPort = upstream.port) {
  const other = await startTestSidecar({ upstreamPort, broker: { verify: 'offline', publicKeyFile: dirKey }, policies: [POLICY], config });
  t.teardown(() => other.close());
  return other;
}

async function viaProxy(path: string, init: { method?: string; token?: string; headers?: Record<string, string>; body?: string } = {}) {
  const agent = init.token ? new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${init.token}`, proxyTunnel: false }) : proxy;
  const res = await request(`http://api.example.com${path}`, { dispatcher: agent, method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) };
}

t.test('allowed request: upstream gets the injected key, never the agent token', async (t) => {
  const r = await viaProxy('/customers/12345/billing', { headers: { authorization: `Bearer ${good}`, cookie: 'session=agent' } });
  t.equal(r.status, 200);
  const seen = r.json() as Received;
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  t.equal(seen.headers['proxy-authorization'], undefined);
  t.equal(seen.headers.cookie, undefined);
  t.notOk(JSON.stringify(seen).includes(good), 'agent token not forwarded anywhere');
  t.equal(seen.url, '/customers/12345/billing');
  t.ok(r.headers['x-request-id'], 'request id returned');
  t.equal(r.headers['x-upstream'], 'yes');
});

t.test('fields that would make the upstream take another method, path or host are not forwarded', async (t) => {
  const overrides = {
    'x-http-method-override': 'DELETE',
    'x-http-method': 'DELETE',
    'x-method-override': 'DELETE',
    'x-original-url': '/customers/67890/billing',
    'x-original-uri': '/customers/67890/billing',
    'x-original-method': 'DELETE',
    'x-rewrite-url': '/admin',
    forwarded: 'host=evil.example;proto=https',
    'x-forwarded-host': 'evil.example',
    'x-forwarded-proto': 'https',
    'x-forwarded-prefix': '/admin',
    'x-forwarded-for': '10.0.0.1',
  };
  const r = await viaProxy('/customers/12345/billing', { headers: { ...overrides, 'x-agent-note': 'kept' } });
  t.equal(r.status, 200);
  const seen = r.json() as Received;
  t.same(
    Object.keys(overrides).filter((h) => seen.headers[h] !== undefined),
    [],
    'none of them reached the upstream',
  );
  t.equal(seen.headers['x-agent-note'], 'kept', 'other fields of the agent are forwarded');
  t.same([seen.method, seen.url], ['GET', '/customers/12345/billing']);

  // The same names spelled with underscores, which CGI and WSGI servers read as the same variables.
  const underscored = Object.fromEntries(Object.entries(overrides).map(([k, v]) => [k.replaceAll('-', '_'), v]));
  const agentCredentials = { proxy_authorization: `Bearer ${good}`, x_request_id: 'agent-chosen' };
  const u = await viaProxy('/customers/12345/billing', { headers: { ...underscored, ...agentCredentials, x_agent_note: 'kept' } });
  t.equal(u.status, 200);
  const seenU = u.json() as Received;
  t.same(
    [...Object.keys(underscored), ...Object.keys(agentCredentials)].filter((h) => seenU.headers[h] !== undefined),
    [],
    'nor with underscores',
  );
  t.equal(seenU.headers.x_agent_note, 'kept');
  t.notOk(JSON.stringify(seenU).includes(good), 'the agent token not forwarded under another spelling');
});

t.test('hop-by-hop fields do not cross the proxy, either way', async (t) => {
  upstream.handlers.set('/files/a/b.txt', (_r, res) => {
    // Raw head: node would otherwise manage Connection and Keep-Alive itself.
    res.socket?.write(
      'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Upstream-Hop\r\nX-Upstream-Hop: private\r\n' +
        'Keep-Alive: timeout=77\r\nX-Request-ID: upstream-made\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok',
    );
    res.socket?.end();
  });
  t.teardown(() => upstream.handlers.delete('/files/a/b.txt'));
  const r = await viaProxy('/files/a/b.txt', { headers: { 'x-request-id': 'agent-id-1' } });
  t.equal(r.status, 200);
  t.equal(r.text, 'ok');
  t.equal(r.headers['x-kept'], 'yes');
  t.equal(r.headers['x-upstream-hop'], undefined, 'a field the upstream named in Connection is dropped');
  t.not(r.headers['keep-alive'], 'timeout=77', 'the upstream keep-alive is not relayed');
  t.equal(r.headers['x-request-id'], 'agent-id-1', 'our request id, not the upstream one');
  // A raw request: HTTP clients manage Connection themselves and would not send this one.
  const answer = await raw(
    `GET http://api.example.com/files/a/b.txt HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${good}\r\n` +
      'Connection: close, X-Agent-Hop\r\nX-Agent-Hop: private\r\nTE: trailers\r\nX-Other: kept\r\nX-Request-ID: agent-id-2\r\n\r\n',
  );
  t.match(answer, /^HTTP\/1\.1 200 /);
  const seen = upstream.received.at(-1) as Received;
  t.equal(seen.headers['x-request-id'], 'agent-id-2');
  t.equal(seen.headers['x-agent-hop'], undefined, 'a field the agent named in Connection is dropped');
  t.equal(seen.headers.te, undefined);
  t.equal(seen.headers['x-other'], 'kept');
});

t.test('scope from another customer is refused with scope_violation', async (t) => {
  const before = upstream.received.length;
  const r = await viaProxy('/customers/67890/billing');
  t.equal(r.status, 403);
  t.match(r.headers['content-type'], /application\/problem\+json/);
  const p = r.json();
  t.equal(p.error_code, 'scope_violation');
  t.equal(p.status, 403);
  t.ok(p.request_id);
  t.equal(upstream.received.length, before, 'upstream never called');
});

t.test('no route: 403 no_route, the detail does not reveal the policy', async (t) => {
  const r = await viaProxy('/admin/users');
  t.equal(r.status, 403);
  t.equal(r.json().error_code, 'no_route');
  t.notMatch(r.text, /billing-read|customers/);
  const wrongMethod = await viaProxy('/customers/12345/billing', { method: 'DELETE' });
  t.equal(wrongMethod.json().error_code, 'no_route');
});

t.test('missing token on a forward request: 407 with Proxy-Authenticate', async (t) => {
  // undici's ProxyAgent turns a 407 into an exception, so speak to the proxy directly.
  const pool = new Pool(sc.proxyUrl);
  t.teardown(() => pool.close());
  const res = await pool.request({ method: 'GET', path: 'http://api.example.com/customers/12345/billing', headers: { host: 'api.example.com' } });
  t.equal(res.statusCode, 407);
  t.match(res.headers['proxy-authenticate'], /Bearer/);
  t.equal(((await res.body.json()) as { error_code: string }).error_code, 'token_required');

  // The agent's own origin credential is not an attempt at a token: still 407, so a client asks
  // for proxy credentials (curl -u u:p -x proxy) rather than take it as the origin's refusal.
  const basic = await pool.request({
    method: 'GET',
    path: 'http://api.example.com/customers/12345/billing',
    headers: { host: 'api.example.com', authorization: `Basic ${Buffer.from('user:pass').toString('base64')}` },
  });
  t.equal(basic.statusCode, 407, 'with only Authorization: Basic');
  t.equal(((await basic.body.json()) as { error_code: string }).error_code, 'token_required');
  const curl = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-u', 'user:pass', '-x', sc.proxyUrl, 'http://api.example.com/customers/12345/billing']);
  t.equal(curl.stdout, '407', 'curl -u user:pass -x proxy');
  const bearer = await pool.request({ method: 'GET', path: 'http://api.example.com/customers/12345/billing', headers: { host: 'api.example.com', authorization: 'Bearer not-a-jwt' } });
  t.equal(bearer.statusCode, 401, 'a Bearer that is no token: 401');
  t.equal(((await bearer.body.json()) as { error_code: string }).error_code, 'token_invalid');
});

t.test('invalid, expired and foreign tokens: 401', async (t) => {
  const other = await makeKey();
  const foreign = await signToken(other, { scope: ['read:billing:customer-12345'] });
  const expired = await signToken(key, { scope: ['read:billing:customer-12345'], exp: Math.floor(Date.now() / 1000) - 5 });
  for (const [name, tok, code] of [
    ['foreign key', foreign, 'token_invalid'],
    ['expired', expired, 'token_expired'],
    ['garbage', 'abc.def.ghi', 'token_invalid'],
  ] as const) {
    const r = await viaProxy('/customers/12345/billing', { token: tok });
    t.equal(r.status, 401, name);
    t.equal(r.json().error_code, code, name);
    t.notOk(r.text.includes(tok), `${name}: token not echoed`);
  }
});

t.test('a token of many scopes, over 16 KiB, is taken (within proxy.maxHeaderBytes)', async (t) => {
  const scopes = ['read:billing:customer-12345', ...Array.from({ length: 300 }, (_, i) => `read:inventory-${i}:warehouse-${i}-shelf`)];
  const big = await signToken(key, { scope: scopes });
  t.ok(big.length > 16 * 1024, `${big.length} characters`);
  const r = await viaProxy('/customers/12345/billing', { token: big });
  t.equal(r.status, 200);
  t.equal((r.json() as Received).headers.authorization, `Bearer ${SECRET}`);
});

t.test('token intake: Authorization Bearer and Basic password are accepted and stripped', async (t) => {
  const bare = new ProxyAgent({ uri: sc.proxyUrl, proxyTunnel: false });
  const res = await request('http://api.example.com/customers/12345/billing', { dispatcher: bare, headers: { authorization: `Bearer ${good}` } });
  t.equal(res.statusCode, 200);
  const seen = (await res.body.json()) as Received;
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  // curl with the token as proxy password, exactly as HTTP_PROXY=http://agent:TOKEN@host:port makes it.
  const { stdout } = await run('curl', ['-sS', '-x', sc.proxyUrl.replace('http://', `http://agent:${good}@`), 'http://api.example.com/customers/12345/billing']);
  const viaCurl = JSON.parse(stdout) as Received;
  t.equal(viaCurl.headers.authorization, `Bearer ${SECRET}`);
  t.equal(viaCurl.headers['proxy-authorization'], undefined);

  // Basic credentials are read as RFC 7617 writes them: characters outside base64 (which node's
  // decoder would skip) make them unreadable, not the same token.
  const pool = new Pool(sc.proxyUrl);
  t.teardown(() => pool.close());
  const b64 = Buffer.from(`agent:${good}`).toString('base64');
  for (const [name, value] of [
    ['a character outside base64 in front', `*${b64}`],
    ['spaces inside', `${b64.slice(0, 8)}  ${b64.slice(8)}`],
    ['trailing garbage', `${b64}!!`],
    ['base64url letters', b64.replace(/[+/]/g, (c) => (c === '+' ? '-' : '_')).replace(/^./, '_')],
  ] as const) {
    const r = await pool.request({ method: 'GET', path: 'http://api.example.com/customers/12345/billing', headers: { host: 'api.example.com', 'proxy-authorization': `Basic ${value}` } });
    t.equal(r.statusCode, 401, name);
    t.equal(((await r.body.json()) as { error_code: string }).error_code, 'token_invalid', name);
  }
  const padded = await pool.request({ method: 'GET', path: 'http://api.example.com/customers/12345/billing', headers: { host: 'api.example.com', 'proxy-authorization': `basic  ${b64}` } });
  t.equal(padded.statusCode, 200, 'the scheme name in any case, spaces around the credentials');
  await padded.body.dump();
});

t.test('query connector replaces an agent-supplied parameter', async (t) => {
  const r = await viaProxy('/search?q=x&api_key=agent-guess');
  t.equal(r.status, 200);
  const seen = r.json() as Received;
  const u = new URL(seen.url, 'http://x');
  t.equal(u.searchParams.get('q'), 'x');
  t.same(u.searchParams.getAll('api_key'), [SECRET]);
});

t.test('rest parameter and POST body streaming', async (t) => {
  const r = await viaProxy('/files/a/b.txt');
  t.equal(r.status, 200);
  t.equal((r.json() as Received).url, '/files/a/b.txt');
  const big = 'x'.repeat(256 * 1024);
  const p = await viaProxy('/customers/12345/refunds', { method: 'POST', body: big, headers: { 'content-type': 'text/plain' } });
  t.equal(p.status, 200, p.status === 200 ? 'POST forwarded' : p.text);
  t.equal((p.json() as Received).body.length, big.length);
});

t.test('delegation depth cap', async (t) => {
  const delegated = await signToken(key, {
    scope: ['read:deep:x'],
    extra: { delegation_chain: [{ agent: 'spiffe://agentwrit.local/agent/o/t/1', scope: ['read:deep:x'], delegated_at: '2026-01-01T00:00:00Z', signature: '00' }], chain_hash: '00' },
  });
  const r = await viaProxy('/deep', { token: delegated });
  // Either the chain fails verification (record signatures are checked with the broker key) or the cap applies.
  t.equal(r.status === 401 || r.status === 403, true);
  const ok = await viaProxy('/deep');
  t.equal(ok.status, 200);
});

t.test('reverse route on the proxy port', async (t) => {
  const res = await request(`${sc.proxyUrl}/billing/customers/12345/billing?x=1`, { headers: { authorization: `Bearer ${good}` } });
  t.equal(res.statusCode, 200);
  const seen = (await res.body.json()) as Received;
  t.equal(seen.url, '/customers/12345/billing?x=1');
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`);
  const anon = await request(`${sc.proxyUrl}/billing/customers/12345/billing`);
  t.equal(anon.statusCode, 401);
  t.equal(((await anon.body.json()) as { error_code: string }).error_code, 'token_missing');
});

function raw(payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(sc.proxyPort, '127.0.0.1', () => s.write(payload));
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
    });
    s.on('end', () => resolve(buf));
    s.on('error', reject);
    setTimeout(() => {
      s.destroy();
      resolve(buf);
    }, 1500);
  });
}

t.test('ambiguous requests are refused with 400', async (t) => {
  const auth = `Proxy-Authorization: Bearer ${good}\r\n`;
  const cases: Array<[string, string]> = [
    ['dot segment', `GET http://api.example.com/customers/../customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\n${auth}Connection: close\r\n\r\n`],
    ['encoded slash', `GET http://api.example.com/customers/12345%2Fx/billing HTTP/1.1\r\nHost: api.example.com\r\n${auth}Connection: close\r\n\r\n`],
    ['host mismatch', `GET http://api.example.com/customers/12345/billing HTTP/1.1\r\nHost: evil.example.com\r\n${auth}Connection: close\r\n\r\n`],
    ['CL and TE', `POST http://api.example.com/customers/12345/refunds HTTP/1.1\r\nHost: api.example.com\r\n${auth}Content-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`],
  ];
  for (const [name, req] of cases) {
    const answer = await raw(req);
    t.match(answer, /^HTTP\/1\.1 400 /, name);
  }
});

/** Writes `payload` on a new connection to `port`, then reads until the sidecar closes it (or 5 s pass). */
function exchange(port: number, payload: string): Promise<{ text: string; closedBySidecar: boolean; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = connect(port, '127.0.0.1', () => s.write(payload));
    let text = '';
    s.on('data', (d) => {
      text += d.toString();
    });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closedBySidecar: false, ms: Date.now() - started });
    }, 5000);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closedBySidecar: true, ms: Date.now() - started });
    });
    s.on('error', reject);
  });
}

t.test('request bodies: a stalled one is cut (408), one over the limit closes its connection (413)', async (t) => {
  // One upstream connection: a body that held it would hold up every later request.
  const tight = await sidecarWith(t, { proxy: { requestBodyTimeout: '1s', maxRequestBodyBytes: 1024 }, upstream: { connectionsPerOrigin: 1 } });
  const head = `POST http://api.example.com/customers/12345/refunds HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${good}\r\n`;

  // A refusal of a request without a body keeps the connection: the next request is answered on it.
  const twice = await exchange(tight.proxyPort, 
    'GET http://api.example.com/customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\n\r\n' +
      `GET http://api.example.com/customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${good}\r\nConnection: close\r\n\r\n`,
  );
  t.match(twice.text, /^HTTP\/1\.1 407 [\s\S]*\r\nConnection: keep-alive\r\n[\s\S]*HTTP\/1\.1 200 /, 'a 407 without a body, then a 200 on the same connection');

  const stalled = await exchange(tight.proxyPort, `${head}Content-Length: 1000\r\n\r\nabc`);
  t.match(stalled.text, /^HTTP\/1\.1 408 /, 'a body that stops coming: 408');
  t.match(stalled.text, /\r\nconnection: close\r\n/i);
  t.match(stalled.text, /"error_code":"request_timeout"/);
  t.ok(stalled.closedBySidecar && stalled.ms >= 900, `cut after the timeout (${stalled.ms} ms)`);
  const after = await request('http://api.example.com/customers/12345/billing', { dispatcher: new ProxyAgent({ uri: tight.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false }) });
  t.equal(after.statusCode, 200, 'the upstream connection it held is free again');
  await after.body.dump();

  const big = 'x'.repeat(2048);
  const tooLarge = await exchange(tight.proxyPort, 
    `${head}Transfer-Encoding: chunked\r\n\r\n${(2048).toString(16)}\r\n${big}\r\n0\r\n\r\nGET http://api.example.com/customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\n\r\n`,
  );
  t.match(tooLarge.text, /^HTTP\/1\.1 413 /, 'a chunked body over the limit: 413');
  t.match(tooLarge.text, /\r\nconnection: close\r\n/i, 'and the connection is not offered for another request');
  t.ok(tooLarge.closedBySidecar, 'closed by the sidecar, not left hanging');

  await tight.runtime.audit.flush();
  const codes = (await import('node:fs')).readFileSync(tight.auditPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).error_code);
  t.ok(codes.includes('request_timeout') && codes.includes('payload_too_large'), 'both audited');
});

t.test('requests node cannot take as they are: problem+json answers, each audited', async (t) => {
  const strict = await sidecarWith(t, { proxy: { headersTimeout: '1s', maxHeaderBytes: 2048 } });
  const problem = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { error_code: string; request_id: string };
  const cases: Array<[string, string, number, string]> = [
    ['an Expect other than 100-continue', 'GET http://api.example.com/customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\nExpect: foo\r\n\r\n', 417, 'expectation_failed'],
    ['a header line without a colon', 'GET http://api.example.com/x HTTP/1.1\r\nHost: api.example.com\r\nNo colon here\r\n\r\n', 400, 'bad_request'],
    ['headers over proxy.maxHeaderBytes', `GET http://api.example.com/x HTTP/1.1\r\nHost: api.example.com\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`, 431, 'headers_too_large'],
    ['a head that stops coming', 'GET http://api.example.com/x HTTP/1.1\r\nHost: api.exa', 408, 'request_timeout'],
  ];
  for (const [name, payload, status, code] of cases) {
    const text = (await exchange(strict.proxyPort, payload)).text;
    t.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), name);
    t.match(text, /\r\ncontent-type: application\/problem\+json\r\n/, `${name}: problem+json`);
    t.equal(problem(text).error_code, code, name);
    t.match(text, new RegExp(`\r\nx-request-id: ${problem(text).request_id}\r\n`), `${name}: its request id`);
  }
  const silent = (await exchange(strict.proxyPort, '')).text;
  t.equal(silent, '', 'a connection that sends nothing is closed without an answer');

  // Expect: 100-continue is answered by the sidecar only once the request is allowed.
  const refusedFirst = (await exchange(strict.proxyPort, 'POST http://api.example.com/customers/12345/refunds HTTP/1.1\r\nHost: api.example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n')).text;
  t.match(refusedFirst, /^HTTP\/1\.1 407 /, 'no 100 Continue before the refusal of a request without a token');
  const body = 'r'.repeat(4000); // curl asks for 100-continue above 1 KiB
  const { stdout } = await run('curl', ['-s', '-x', strict.proxyUrl, '--proxy-user', `agent:${good}`, '--data-binary', body, 'http://api.example.com/customers/12345/refunds']);
  const seen = JSON.parse(stdout) as Received;
  t.same([seen.method, seen.body.length, seen.headers.expect], ['POST', 4000, undefined], 'curl with Expect: 100-continue: the body arrives, Expect is not forwarded');

  await strict.runtime.audit.flush();
  const records = (await import('node:fs')).readFileSync(strict.auditPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const [name, , , code] of cases) t.ok(records.some((r) => r.decision === 'deny' && r.error_code === code), `${name}: audited`);
});

t.test('a secret file that goes bad: 503 to the agent, the connector and the reason to the operator', async (t) => {
  const dir = tempDir('aws-secret-');
  const secretFile = join(dir, 'billing-key');
  writeFileSync(secretFile, 'sk-file-SECRET-456\n');
  const fileSc = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: { verify: 'offline', publicKeyFile: dirKey },
    policies: [
      {
        version: 'v1',
        connectors: [{ name: 'billing-file', type: 'static', secret: { file: secretFile }, header: 'X-Api-Key' }],
        routes: [{ id: 'billing-read', host: 'api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-file' }],
      },
    ],
  });
  t.teardown(() => fileSc.close());
  const agent = new ProxyAgent({ uri: fileSc.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false });
  const get = async () => {
    const res = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent, headers: { x_api_key: 'agent-copy' } });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  };
  const ok = await get();
  t.equal(ok.status, 200);
  t.same([(ok.body as unknown as Received).headers['x-api-key'], (ok.body as unknown as Received).headers.x_api_key], ['sk-file-SECRET-456', undefined], 'the agent copy under x_api_key is gone');

  writeFileSync(`${secretFile}.tmp`, '   \n');
  (await import('node:fs')).renameSync(`${secretFile}.tmp`, secretFile);
  await new Promise((r) => setTimeout(r, 1100)); // the file is looked at once a second
  const refused = await get();
  t.same([refused.status, refused.body.error_code, refused.body.detail], [503, 'connector_unavailable', 'the upstream credential is unavailable']);
  await get();
  const lines = fileSc.logs.filter((l) => l.includes('connector cannot provide its credential'));
  t.equal(lines.length, 1, 'logged once while the reason stays the same');
  t.match(JSON.parse(lines[0] ?? '{}'), { level: 'error', connector: 'billing-file', route: 'billing-read', reason: /billing-key cannot be read \(the file holds only whitespace\)/ });
  t.notOk(fileSc.logs.join('\n').includes('sk-file-SECRET-456'), 'no value in the log');
});

t.test('proxy.maxConnections: connections beyond it are closed on arrival, counted, and the sidecar serves on', async (t) => {
  const small = await sidecarWith(t, { proxy: { maxConnections: 3 } });
  const open = () =>
    new Promise<import('node:net').Socket>((resolve, reject) => {
      const s = connect(small.proxyPort, '127.0.0.1', () => resolve(s));
      s.on('error', reject);
    });
  const held = [await open(), await open(), await open()];
  await new Promise((r) => setTimeout(r, 50));
  const extra = await open();
  const closed = await new Promise<boolean>((resolve) => {
    extra.once('close', () => resolve(true));
    setTimeout(() => resolve(false), 2000);
  });
  t.ok(closed, 'the fourth connection is closed by the sidecar');
  const metrics = await (await request(`${small.adminUrl}/metrics`)).body.text();
  t.match(metrics, /^agentwrit_sidecar_connections_dropped_total 1$/m);
  t.ok(small.logs.some((l) => l.includes('proxy.maxConnections reached')), 'a warning is logged');
  for (const s of held) s.destroy();
  await new Promise((r) => setTimeout(r, 50));
  const res = await request('http://api.example.com/customers/12345/billing', { dispatcher: new ProxyAgent({ uri: small.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false }) });
  t.equal(res.statusCode, 200, 'once they are closed, requests are served again');
  await res.body.dump();
});

t.test('every upstream connection busy: a request waits at most upstream.headersTimeout for one (504), then they serve again', async (t) => {
  let release: () => void = () => {};
  upstream.handlers.set('/files/a/b.txt', (_r, res) => {
    // The head at once, the body only when released: the connection stays taken meanwhile.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('start');
    release = () => res.end('end');
  });
  t.teardown(() => upstream.handlers.delete('/files/a/b.txt'));
  const one = await sidecarWith(t, { upstream: { connectionsPerOrigin: 1, headersTimeout: '1s' } });
  const agent = new ProxyAgent({ uri: one.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false });
  t.teardown(() => agent.close());
  const holding = await request('http://api.example.com/files/a/b.txt', { dispatcher: agent });
  t.equal(holding.statusCode, 200, 'the first request holds the only connection');
  const billingSeen = () => upstream.received.filter((r) => r.url === '/customers/12345/billing').length;
  const before = billingSeen();
  const started = Date.now();
  const waiting = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
  const ms = Date.now() - started;
  t.equal(waiting.statusCode, 504);
  t.equal(((await waiting.body.json()) as { error_code: string; detail: string }).detail, 'no connection to the upstream became free in time');
  t.ok(ms >= 900 && ms < 3000, `answered after about headersTimeout (${ms} ms)`);
  release();
  t.equal(await holding.body.text(), 'startend');
  const after = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
  t.equal(after.statusCode, 200, 'the connection serves the next request');
  await after.body.dump();
  t.equal(billingSeen(), before + 1, 'the request answered 504 was never sent upstream, only the one after it');
});

t.test('a body left unread by an exchange that failed does not outlive it (its timeout would end the process)', async (t) => {
  const dead = await sidecarWith(t, { proxy: { requestBodyTimeout: '1s' } }, 1); // nothing listens on port 1
  const answer = await new Promise<string>((resolve, reject) => {
    const s = connect(dead.proxyPort, '127.0.0.1', () =>
      s.write(`POST http://api.example.com/customers/12345/refunds HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${good}\r\nContent-Length: 100000\r\n\r\n0123456789`),
    );
    let text = '';
    s.on('data', (d) => {
      text += d.toString();
    });
    s.on('close', () => resolve(text));
    s.on('error', reject);
  });
  t.match(answer, /^HTTP\/1\.1 502 /);
  await new Promise((r) => setTimeout(r, 1500)); // past requestBodyTimeout
  const health = await request(`${dead.adminUrl}/healthz`);
  t.equal(health.statusCode, 200, 'still running');
  await health.body.dump();
});

t.test('upstream failures: 502 when unreachable', async (t) => {
  const down = await startTestSidecar({
    upstreamPort: 1, // nothing listens on port 1
    broker: { verify: 'offline', publicKeyFile: dirKey },
  });
  t.teardown(() => down.close());
  const agent = new ProxyAgent({ uri: down.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false });
  const res = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
  t.equal(res.statusCode, 502);
  t.equal(((await res.body.json()) as { error_code: string }).error_code, 'upstream_unreachable');
});

t.test('upstream timeout: 504', async (t) => {
  upstream.handlers.set('/customers/55555', () => {
    /* never answers */
  });
  const slow = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: { verify: 'offline', publicKeyFile: dirKey },
    config: { upstream: { connectTo: { 'api.example.com:80': `127.0.0.1:${upstream.port}` }, headersTimeout: '300ms' } },
  });
  t.teardown(() => slow.close());
  const tok = await signToken(key, { scope: ['read:billing:customer-55555'] });
  const agent = new ProxyAgent({ uri: slow.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  const res = await request('http://api.example.com/customers/55555/billing', { dispatcher: agent });
  t.equal(res.statusCode, 504);
  t.equal(((await res.body.json()) as { error_code: string }).error_code, 'upstream_timeout');
});

t.test('the in-flight gauge counts a request until its response is done', async (t) => {
  const gauge = async () => {
    const text = await (await request(`${sc.adminUrl}/metrics`)).body.text();
    return Number(/^agentwrit_sidecar_inflight_requests (\d+)$/m.exec(text)?.[1]);
  };
  let release: () => void = () => {};
  const held = new Promise<void>((r) => {
    release = r;
  });
  upstream.handlers.set('/files/a/b.txt', (_r, res) => {
    void held.then(() => res.end('done'));
  });
  t.teardown(() => upstream.handlers.delete('/files/a/b.txt'));
  t.equal(await gauge(), 0);
  const pending = viaProxy('/files/a/b.txt');
  let seen = 0;
  for (let i = 0; i < 100 && seen === 0; i++) {
    seen = await gauge();
    if (seen === 0) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(seen, 1, 'one request waiting on the upstream');
  release();
  t.equal((await pending).text, 'done');
  t.equal(await gauge(), 0, 'none once answered');
});

t.test('admin listener: metrics, healthz, readyz', async (t) => {
  const m = await request(`${sc.adminUrl}/metrics`);
  const text = await m.body.text();
  t.equal(m.statusCode, 200);
  t.match(text, /agentwrit_sidecar_requests_total\{route="billing-read",decision="allow",code="ok"\} \d+/);
  t.match(text, /agentwrit_sidecar_token_verifications_total\{outcome="ok",source="(cache|offline)"\}/);
  t.match(text, /agentwrit_sidecar_policy_generation 1/);
  t.notOk(text.includes(good) || text.includes(SECRET) || text.includes('spiffe://'), 'no token, secret or subject in metrics');
  // Every agentwrit_sidecar_* family is in the README's metrics table with its type, and the table names no other.
  const exposed = [...text.matchAll(/^# TYPE (agentwrit_sidecar_\w+) (\w+)$/gm)].map((x) => `${x[1]} ${x[2]}`).sort();
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const documented = [...readme.matchAll(/^\| `(agentwrit_sidecar_\w+)` \| (\w+) \|/gm)].map((x) => `${x[1]} ${x[2]}`).sort();
  t.ok(exposed.length >= 20, `${exposed.length} families exposed`);
  t.same(documented, exposed, 'README metrics table = metrics exposed');
  t.equal((await request(`${sc.adminUrl}/healthz`)).statusCode, 200);
  const ready = await request(`${sc.adminUrl}/readyz`);
  t.equal(ready.statusCode, 200);
  t.equal(((await ready.body.json()) as { ready: boolean }).ready, true);
});

t.test('a client that goes away aborts the upstream request', async (t) => {
  let upstreamClosed: () => void = () => {};
  const closed = new Promise<void>((r) => {
    upstreamClosed = r;
  });
  upstream.handlers.set('/files/slow', (_r, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    const timer = setInterval(() => res.write('chunk\n'), 20);
    res.on('close', () => {
      clearInterval(timer);
      upstreamClosed();
    });
  });
  const tok = await signToken(key, { scope: ['read:files:slow'] });
  const s = connect(sc.proxyPort, '127.0.0.1');
  s.write(`GET http://api.example.com/files/slow HTTP/1.1\r\nHost: api.example.com\r\nProxy-Authorization: Bearer ${tok}\r\n\r\n`);
  await new Promise<void>((r) => s.once('data', () => r()));
  s.destroy();
  const outcome = await Promise.race([closed.then(() => 'upstream released'), new Promise((r) => setTimeout(() => r('still streaming'), 2000))]);
  t.equal(outcome, 'upstream released');
});

t.test('backpressure: a large response streams through intact', async (t) => {
  const big = Buffer.alloc(8 * 1024 * 1024, 'a');
  upstream.handlers.set('/files/big', (_r, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': big.length });
    res.end(big);
  });
  const tok = await signToken(key, { scope: ['read:files:big'] });
  const res = await request('http://api.example.com/files/big', { dispatcher: new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false }) });
  let n = 0;
  for await (const chunk of res.body) {
    n += (chunk as Buffer).length;
    if (n < 1024 * 1024) await new Promise((r) => setTimeout(r, 1)); // a slow reader at first
  }
  t.equal(res.statusCode, 200);
  t.equal(n, big.length);
});

t.test('a query credential echoed in a response header never reaches the agent; a redirect still leads on', async (t) => {
  const encoded = `api_key=${encodeURIComponent(SECRET)}`;
  upstream.handlers.set('/search', (r, res) => {
    // As a trailing-slash redirect keeps the query, and a debug header repeats the URL.
    res.writeHead(301, {
      location: r.url.replace('/search?', '/search/?'),
      'content-location': `http://api.example.com${r.url}#top`,
      link: `<http://api.example.com${r.url}>; rel="canonical"`,
      'x-debug-url': r.url,
      'x-other': 'kept',
    });
    res.end();
  });
  t.teardown(() => upstream.handlers.delete('/search'));
  const r = await viaProxy('/search?q=cats&page=2');
  t.equal(r.status, 301);
  t.equal(r.headers.location, '/search/?q=cats&page=2', 'the redirect without the credential');
  t.equal(r.headers['content-location'], 'http://api.example.com/search?q=cats&page=2#top');
  t.equal(r.headers.link, '<http://api.example.com/search?q=cats&page=2>; rel="canonical"');
  t.equal(r.headers['x-debug-url'], undefined, 'a field holding it otherwise is not relayed');
  t.equal(r.headers['x-other'], 'kept');
  t.notOk(JSON.stringify(r.headers).includes(SECRET), 'the secret is nowhere in the head');
  t.notOk(JSON.stringify(r.headers).includes(encoded));
  const only = await viaProxy('/search');
  t.equal(only.headers.location, '/search/', 'the credential the only parameter: the "?" goes too');
});

t.test('an upstream that cannot be reached: 502 to the agent, the reason (never the path) to the operator', async (t) => {
  const { createServer } = await import('node:net');
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as { port: number }).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const other = await sidecarWith(t, {}, port);
  const agent = new ProxyAgent({ uri: other.proxyUrl, token: `Bearer ${good}`, proxyTunnel: false });
  t.teardown(() => agent.close());
  for (let i = 0; i < 2; i++) {
    const res = await request('http://api.example.com/customers/12345/billing?secret=q', { dispatcher: agent });
    await res.body.dump();
    t.equal(res.statusCode, 502);
  }
  const lines = other.logs.filter((l) => l.includes('an upstream cannot be used'));
  t.equal(lines.length, 1, 'once while the reason stays the same');
  t.match(JSON.parse(lines[0]), { level: 'warn', error_code: 'upstream_unreachable', host: 'api.example.com', reason: 'ECONNREFUSED' });
  t.notMatch(lines[0], /customers|secret=q/, 'no path or query');
});
