import { writeFileSync } from 'node:fs';
import t from 'tap';
import { request } from 'undici';
import { isLoopbackAddress } from '../../src/server.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';
import { makeKey } from '../helpers/tokens.js';
import { startUpstream } from '../helpers/upstream.js';

t.test('POST /reload is only accepted from loopback peers', async (t) => {
  for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) t.equal(isLoopbackAddress(a), true, a);
  for (const a of ['10.0.0.7', '::ffff:10.0.0.7', 'fe80::1', '128.0.0.1', '', undefined]) t.equal(isLoopbackAddress(a), false, String(a));
});

t.test('admin paths: HEAD answers as GET without a body; another method is 405 with Allow; unknown paths 404', async (t) => {
  const up = await startUpstream();
  const sc = await startTestSidecar({ upstreamPort: up.port, broker: { verify: 'offline', publicKeyFile: await keyFile() } });
  t.teardown(async () => {
    await sc.close();
    await up.close();
  });
  for (const path of ['/metrics', '/healthz', '/readyz']) {
    const get = await request(`${sc.adminUrl}${path}`);
    const getBody = await get.body.text();
    const head = await request(`${sc.adminUrl}${path}`, { method: 'HEAD' });
    t.equal(head.statusCode, get.statusCode, `HEAD ${path}`);
    t.equal(head.headers['content-type'], get.headers['content-type']);
    t.equal(await head.body.text(), '', 'no body');
    t.ok(getBody.length > 0);
    for (const method of ['PUT', 'DELETE', 'POST']) {
      const r = await request(`${sc.adminUrl}${path}`, { method: method as 'PUT' });
      await r.body.dump();
      t.equal(r.statusCode, 405, `${method} ${path}`);
      t.equal(r.headers.allow, 'GET, HEAD');
    }
  }
  const getReload = await request(`${sc.adminUrl}/reload`);
  await getReload.body.dump();
  t.equal(getReload.statusCode, 405);
  t.equal(getReload.headers.allow, 'POST');
  const unknown = await request(`${sc.adminUrl}/nope`);
  await unknown.body.dump();
  t.equal(unknown.statusCode, 404);
});

async function keyFile(): Promise<string> {
  const file = `${tempDir('aws-admin-')}/k.pem`;
  writeFileSync(file, (await makeKey()).publicPem);
  return file;
}
