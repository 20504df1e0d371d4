/**
 * Upstream CA files followed as they are renewed: a route's `caFile` and `upstream.caFile` are looked
 * at before requests to https upstreams, at most once a second; a renewed bundle is trusted from then
 * on (connections made on the old trust are not reused), one that does not parse leaves the trust in
 * service and is logged, and an unusable `upstream.caFile` stops the start.
 */
import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:https';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { stringify } from 'yaml';
import { type CaMaterial, generateEphemeralCa } from '../../src/tls/ca.js';
import { LeafCache } from '../../src/tls/leaf.js';
import { eventually, rawRequest } from '../helpers/https-fixture.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { makeKey, signToken } from '../helpers/tokens.js';
import { tempDir } from '../helpers/tmp.js';
import { wsAccept, wsKey } from '../helpers/ws.js';

const dir = tempDir('aws-ca-renew-');
const [ca1, ca2, ca3] = await Promise.all([generateEphemeralCa(), generateEphemeralCa(), generateEphemeralCa()]);
const leavesOf = (ca: CaMaterial) => new LeafCache(ca, { maxEntries: 8, validityMs: 3_600_000 });
let serving = leavesOf(ca1);

// An https upstream whose certificates come from ca1 until a test switches it to ca2.
const upstream: Server = createServer(
  {
    SNICallback: (name, cb) => {
      serving.get(name).then(
        (ctx) => cb(null, ctx),
        (e: Error) => cb(e),
      );
    },
  },
  (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`upstream saw ${req.url}`);
  },
);
// WebSocket upgrades: the handshake completed, then closed.
upstream.on('upgrade', (req, socket) => {
  socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`);
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
const upPort = (upstream.address() as AddressInfo).port;
/**
 * The upstream presents leaves of `ca` from now on, as a restarted server would: open connections are
 * cut and its session tickets no longer resume, so every new connection shows the new certificate.
 */
const serveFrom = (ca: CaMaterial) => {
  serving = leavesOf(ca);
  upstream.setTicketKeys(randomBytes(48));
  upstream.closeAllConnections();
};

const routeCa = join(dir, 'route-ca.pem');
const upstreamCa = join(dir, 'upstream-ca.pem');
writeFileSync(routeCa, ca1.certPem);
writeFileSync(upstreamCa, ca1.certPem);
/** Replaces a file the way a Secret update or `mv` does: a new inode under the same name. */
const replaceFile = (file: string, text: string) => {
  writeFileSync(`${file}.new`, text);
  renameSync(`${file}.new`, file);
};

const key = await makeKey();
writeFileSync(join(dir, 'broker.pem'), key.publicPem);
const token = await signToken(key, { scope: ['read:svc:*'] });
const route = { methods: ['GET'], path: '/{rest*}', scopes: ['read:svc:*'] };
const withRouteCa = { id: 'with-route-ca', mount: '/r', upstream: 'https://api.example.com', caFile: routeCa, ...route };
const upstreamCaOnly = { id: 'upstream-ca-only', mount: '/u', upstream: 'https://other.example.com', ...route };
const sc = await startTestSidecar({
  upstreamPort: upPort,
  dir,
  broker: { verify: 'offline', publicKeyFile: join(dir, 'broker.pem') },
  policies: [{ version: 'v1', routes: [withRouteCa, upstreamCaOnly] }],
  config: {
    upstream: {
      caFile: upstreamCa,
      connectTo: { 'api.example.com:443': `127.0.0.1:${upPort}`, 'other.example.com:443': `127.0.0.1:${upPort}` },
    },
  },
});
t.teardown(async () => {
  await sc.close();
  await new Promise<void>((r) => upstream.close(() => r()));
});

async function get(mount: string): Promise<{ status: number; code?: string }> {
  const res = await request(`${sc.proxyUrl}${mount}/x`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.body.text();
  return { status: res.statusCode, code: res.statusCode === 200 ? undefined : (JSON.parse(text) as { error_code: string }).error_code };
}
const logged = (msg: string, file: string) => sc.logs.some((l) => l.includes(msg) && l.includes(JSON.stringify(file)));

t.test('a renewed route caFile is trusted within a second or so; other trust is untouched', async (t) => {
  t.same(await get('/r'), { status: 200, code: undefined }, 'ca1 upstream, ca1 in the route caFile');
  t.same(await get('/u'), { status: 200, code: undefined }, 'ca1 upstream, ca1 in upstream.caFile');
  serveFrom(ca2);
  t.same(await get('/r'), { status: 502, code: 'upstream_tls_error' }, 'the upstream moved to ca2 before the bundle did: refused');
  replaceFile(routeCa, ca2.certPem);
  const renewedAt = Date.now();
  await eventually(async () => (await get('/r')).status === 200, 5000);
  t.ok(Date.now() - renewedAt < 3000, `trusted ${Date.now() - renewedAt} ms after the file changed`);
  t.ok(logged('upstream CA file changed', routeCa), 'the renewal is logged with the file');
  t.same(await get('/u'), { status: 502, code: 'upstream_tls_error' }, 'a route caFile extends only its own route');
});

t.test('a renewed file that does not parse leaves the trust in service, logged once', async (t) => {
  replaceFile(routeCa, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  await eventually(async () => {
    t.equal((await get('/r')).status, 200, 'still served: ca2, from the route bundle in service, is the only trust for it');
    return logged('upstream CA file cannot be used', routeCa);
  }, 5000);
  const line = sc.logs.find((l) => l.includes('upstream CA file cannot be used')) ?? '';
  t.match(line, /certificate 1 of 1 does not parse/);
  // The same state of the file is not reported again.
  await new Promise((r) => setTimeout(r, 1100));
  t.equal((await get('/r')).status, 200);
  await new Promise((r) => setTimeout(r, 1100));
  t.equal((await get('/r')).status, 200);
  t.equal(sc.logs.filter((l) => l.includes('upstream CA file cannot be used')).length, 1);
  const metrics = await (await fetch(`${sc.adminUrl}/metrics`)).text();
  t.match(metrics, /^agentwrit_sidecar_upstream_ca_reloads_total\{result="success"\} 1$/m, 'the renewal of the first test');
  t.match(metrics, /^agentwrit_sidecar_upstream_ca_reloads_total\{result="failure"\} 1$/m);
});

t.test('a renewed upstream.caFile (edited in place) is trusted by every https route', async (t) => {
  serveFrom(ca3);
  t.same(await get('/r'), { status: 502, code: 'upstream_tls_error' }, 'no trust in ca3 yet');
  writeFileSync(upstreamCa, `${ca1.certPem}${ca3.certPem}`);
  await eventually(async () => (await get('/u')).status === 200, 5000);
  t.equal((await get('/r')).status, 200, 'a route with a caFile of its own trusts the renewed upstream.caFile too');
  t.ok(logged('upstream CA file changed', upstreamCa));
});

t.test('a WebSocket upgrade waits for a due look at the CA files, as a request does', async (t) => {
  const ca4 = await generateEphemeralCa();
  serveFrom(ca4);
  replaceFile(routeCa, ca4.certPem);
  // Past the second since the last look: the upgrade is the first to look at the renewed file.
  await new Promise((r) => setTimeout(r, 1100));
  const upgrade = `GET /r/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${wsKey()}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`;
  const r = await rawRequest(sc.proxyPort, upgrade, { untilClose: true });
  t.equal(r.status, 101, 'dialed with the renewed trust');
  r.socket.destroy();
});

t.test('a route with a caFile removed by a reload: its upstream connections are closed at once', async (t) => {
  serveFrom(ca1);
  t.equal((await get('/r')).status, 200);
  t.equal((await get('/u')).status, 200);
  const open = () => new Promise<number>((resolve, reject) => upstream.getConnections((e, n) => (e ? reject(e) : resolve(n))));
  t.equal(await open(), 2, 'one kept-alive connection per trust');
  writeFileSync(join(dir, 'policies', 'policy-0.yaml'), stringify({ version: 'v1', routes: [upstreamCaOnly] }));
  t.equal((await request(`${sc.adminUrl}/reload`, { method: 'POST' })).statusCode, 200);
  t.same(await get('/r'), { status: 403, code: 'no_route' });
  // Well before the pool's keep-alive time (4 s) would close it anyway.
  await eventually(async () => (await open()) === 1, 1500);
  t.equal((await get('/u')).status, 200, 'the other trust is untouched');
});

t.test('an upstream.caFile that cannot serve as trust stops the start, naming it', async (t) => {
  const bad = join(dir, 'bad-ca.pem');
  for (const [text, why] of [
    ['not a certificate\n', /upstream\.caFile .*bad-ca\.pem holds no PEM certificate/],
    [`${ca1.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`, /upstream\.caFile .*bad-ca\.pem certificate 2 of 2 does not parse/],
  ] as const) {
    writeFileSync(bad, text);
    await t.rejects(
      startTestSidecar({ upstreamPort: upPort, dir: tempDir('aws-ca-bad-'), broker: { verify: 'offline', publicKeyFile: join(dir, 'broker.pem') }, config: { upstream: { caFile: bad, connectTo: {} } } }),
      why,
    );
  }
  await t.rejects(startTestSidecar({ upstreamPort: upPort, dir: tempDir('aws-ca-bad-'), broker: { verify: 'offline', publicKeyFile: join(dir, 'broker.pem') }, config: { upstream: { caFile: join(dir, 'missing.pem') } } }), /upstream\.caFile .*missing\.pem cannot be read/);
});
