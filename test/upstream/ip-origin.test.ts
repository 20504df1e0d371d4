/**
 * An https upstream named by IP address and dialed elsewhere through connectTo: its certificate is
 * checked against the IP the route names, never against the address dialed (an IP origin sends no
 * SNI, so nothing else would hold the check to the origin).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { writePki } from '../helpers/pki.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';
import { makeKey, signToken } from '../helpers/tokens.js';

const dir = tempDir('aws-ip-origin-');
const pki = await writePki(dir);
// Its certificate names 127.0.0.1 only.
const server = createServer({ cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) }, (req, res) => {
  res.end(`seen ${req.headers.authorization ?? 'nothing'}`);
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as AddressInfo).port;
t.teardown(() => server.close());

const key = await makeKey();
writeFileSync(join(dir, 'broker.pem'), key.publicPem);
const route = { methods: ['GET'], path: '/x', scopes: ['read:svc:x'], connector: 'k', caFile: pki.caCert };
const sc = await startTestSidecar({
  upstreamPort: port,
  dir,
  broker: { verify: 'offline', publicKeyFile: join(dir, 'broker.pem') },
  env: { SVC_KEY: 'svc-secret' },
  policies: [
    {
      version: 'v1',
      connectors: [{ name: 'k', type: 'static', secret: { env: 'SVC_KEY' } }],
      routes: [
        { id: 'other-ip', mount: '/other', upstream: 'https://10.9.9.9', ...route },
        { id: 'same-ip', mount: '/same', upstream: `https://127.0.0.1:${port}`, ...route },
      ],
    },
  ],
  config: { upstream: { connectTo: { '10.9.9.9:443': `127.0.0.1:${port}` } } },
});
t.teardown(() => sc.close());
const token = await signToken(key, { scope: ['read:svc:x'] });

async function get(mount: string) {
  const r = await request(`${sc.proxyUrl}${mount}/x`, { headers: { authorization: `Bearer ${token}` } });
  return { status: r.statusCode, text: await r.body.text() };
}

t.test('a certificate for the dialed address, not for the origin 10.9.9.9: refused, nothing sent', async (t) => {
  const r = await get('/other');
  t.equal(r.status, 502);
  t.equal((JSON.parse(r.text) as { error_code: string }).error_code, 'upstream_tls_error');
});

t.test('a certificate for the origin IP itself: served', async (t) => {
  t.same(await get('/same'), { status: 200, text: 'seen svc-secret' });
});
