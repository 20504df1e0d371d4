/**
 * A `_method` override through a real sidecar: in the query it is refused before anything goes
 * upstream; in a form body the body is cut before the field passes, so the upstream never has a
 * whole request to act on. Forms without it pass unchanged.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { Client } from 'undici';
import { startTestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';
import { makeKey, signToken } from '../helpers/tokens.js';
import { startUpstream } from '../helpers/upstream.js';

const run = promisify(execFile);
const key = await makeKey();
const keyFile = `${tempDir('aws-override-')}/k.pem`;
writeFileSync(keyFile, key.publicPem);
const token = await signToken(key, { scope: ['write:items:*'] });

/** A sidecar allowing POST /items on api.example.com; counts the requests the upstream saw begin. */
async function setup(t: Test) {
  const up = await startUpstream();
  let begun = 0;
  up.server.prependListener('request', () => {
    begun++;
  });
  const sc = await startTestSidecar({
    upstreamPort: up.port,
    broker: { verify: 'offline', publicKeyFile: keyFile },
    policies: [{ version: 'v1', routes: [{ id: 'items-post', host: 'api.example.com', methods: ['POST'], path: '/items', scopes: ['write:items:*'] }] }],
  });
  t.teardown(async () => {
    await sc.close();
    await up.close();
  });
  const client = new Client(sc.proxyUrl);
  t.teardown(() => client.destroy());
  const post = async (path: string, body: string | Readable | undefined, contentType?: string) => {
    const res = await client.request({
      method: 'POST',
      path: `http://api.example.com${path}`,
      headers: { host: 'api.example.com', 'proxy-authorization': `Bearer ${token}`, ...(contentType ? { 'content-type': contentType } : {}) },
      body,
    });
    const text = await res.body.text();
    return { status: res.statusCode, text };
  };
  return { sc, up, post, client, begun: () => begun };
}

t.test('`_method` in the query: 400 ambiguous_request, nothing sent upstream', async (t) => {
  const { up, post, begun } = await setup(t);
  for (const q of ['_method=DELETE', 'a=1&%5Fmethod=PUT', '_METHOD=PATCH']) {
    const r = await post(`/items?${q}`, 'x=1', 'application/x-www-form-urlencoded');
    t.equal(r.status, 400, q);
    t.equal(JSON.parse(r.text).error_code, 'ambiguous_request');
  }
  t.equal(begun(), 0, 'the upstream saw no request');
  t.equal(up.received.length, 0);
});

t.test('`_method` in a form body: 400, and the upstream never has the whole request', async (t) => {
  const { sc, up, post, begun } = await setup(t);
  const small = await post('/items', 'name=x&_method=DELETE', 'application/x-www-form-urlencoded');
  t.equal(small.status, 400);
  t.match(JSON.parse(small.text), { error_code: 'ambiguous_request', detail: /in the body/ });

  // A long form whose field comes late, in its own piece: the pieces before it went upstream.
  async function* late() {
    yield Buffer.from(`a=${'x'.repeat(256 * 1024)}&b=2`);
    await new Promise((r) => setTimeout(r, 100));
    yield Buffer.from('&_meth');
    yield Buffer.from('od=DELETE&c=3');
  }
  const big = await post('/items', Readable.from(late()), 'application/x-www-form-urlencoded');
  t.equal(big.status, 400);

  const multipart = `--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n`;
  const mp = await post('/items', multipart, 'multipart/form-data; boundary=b');
  t.equal(mp.status, 400);

  // curl, as a user would send a form.
  const { stdout } = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-x', `http://agent:${token}@127.0.0.1:${sc.proxyPort}`, '-d', 'name=x', '-d', '_method=DELETE', 'http://api.example.com/items']);
  t.equal(stdout, '400', 'curl -d _method=DELETE');

  await new Promise((r) => setTimeout(r, 200));
  t.ok(begun() >= 1, 'the long form began upstream');
  t.equal(up.received.length, 0, 'no request reached the upstream whole');
});

t.test('forms without `_method` pass unchanged; other bodies are not read for it', async (t) => {
  const { up, post } = await setup(t);
  const form = 'method=DELETE&q=_method&x=%5Fmethod&_methods=1';
  const r = await post('/items?q=_method', form, 'application/x-www-form-urlencoded');
  t.equal(r.status, 200);
  t.equal(up.received[0].body, form);
  const json = '{"title":"_method","nested":{"_method":"DELETE"}}';
  const j = await post('/items', json, 'application/json');
  t.equal(j.status, 200, 'a JSON body whose top level has no _method key passes');
  t.equal(up.received[1].body, json);
  const binary = '_method=DELETE';
  const b = await post('/items', binary, 'application/octet-stream');
  t.equal(b.status, 200, 'a body of another type is not read');
  t.equal(up.received[2].body, binary);
});

t.test('`_method` at the top of a JSON body (Laravel), and in a POST without Content-Type (Rack reads it as a form)', async (t) => {
  const { up, post } = await setup(t);
  const json = await post('/items', '{"title":"x","\\u005fmethod":"DELETE"}', 'application/json; charset=utf-8');
  t.equal(json.status, 400);
  t.match(JSON.parse(json.text), { error_code: 'ambiguous_request', detail: /method override \(_method\) in the body/ });
  const untyped = await post('/items', 'a=1&_method=DELETE', undefined);
  t.equal(untyped.status, 400);
  const quoted = await post('/items', "--b\r\nContent-Disposition: form-data; name='_method'\r\n\r\nDELETE\r\n--b--\r\n", 'multipart/form-data,boundary=b');
  t.equal(quoted.status, 400, "multipart, name in single quotes, media type cut at ','");
  t.equal(up.received.length, 0);
});

t.test('a form or JSON body that cannot be read for `_method` (compressed, UTF-16) is refused before anything goes upstream', async (t) => {
  const { up, post, client, begun } = await setup(t);
  const zipped = await client.request({
    method: 'POST',
    path: 'http://api.example.com/items',
    headers: { host: 'api.example.com', 'proxy-authorization': `Bearer ${token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
    body: gzipSync('{"_method":"DELETE"}'),
  });
  t.equal(zipped.statusCode, 400);
  t.match(JSON.parse(await zipped.body.text()), { error_code: 'ambiguous_request', detail: /compressed form or JSON body cannot be checked/ });
  const utf16 = await post('/items', Buffer.from('{"_method":"DELETE"}', 'utf16le').toString('latin1'), 'application/json; charset=utf-16le');
  t.equal(utf16.status, 400);
  t.equal(begun(), 0, 'the upstream saw no request');
  t.equal(up.received.length, 0);
});
