import { createServer, type IncomingHttpHeaders, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConnectorSchema, type ConnectorInput } from '../../src/config/schema.js';
import { createConnector } from '../../src/connectors/registry.js';
import { explainFailure, SECRET_RECHECK_MS } from '../../src/connectors/secrets.js';
import { setQueryParam } from '../../src/connectors/static.js';
import type { Connector, CredentialContext, OutboundRequest } from '../../src/connectors/types.js';
import { SidecarError } from '../../src/errors.js';

const PH = '${secret}';
const dir = await mkdtemp(join(tmpdir(), 'aw-static-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const ctx: CredentialContext = { routeId: 'r', sub: 'agent', tokenExp: Math.floor(Date.now() / 1000) + 300 };
const def = (d: unknown): ConnectorInput => ConnectorSchema.parse(d);
const outbound = (path = '/customers/1/billing', headers: OutboundRequest['headers'] = {}): OutboundRequest => ({
  method: 'GET',
  path,
  headers,
  origin: { scheme: 'http', host: '127.0.0.1', port: 1 },
});

async function applied(c: Connector, out = outbound()): Promise<OutboundRequest> {
  await c.provision();
  c.apply(await c.getCredential(ctx), out);
  return out;
}

async function refusal(c: Connector): Promise<SidecarError> {
  const e = await c.getCredential(ctx).then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof SidecarError)) throw new Error('expected a SidecarError');
  return e;
}

t.test('header: default Authorization, the raw secret', async (t) => {
  const c = createConnector(def({ name: 'a', type: 'static', secret: { env: 'K' } }), { baseDir: dir, env: { K: 'sk-1' } });
  t.equal(c.name, 'a');
  t.equal(c.type, 'static');
  const out = await applied(c, outbound('/x', { authorization: 'Bearer agent-token', accept: '*/*' }));
  t.same(out.headers, { authorization: 'sk-1', accept: '*/*' }, 'replaces whatever was there');
});

t.test('header: custom name and format; "$&" in a secret stays literal', async (t) => {
  const c = createConnector(def({ name: 'b', type: 'static', secret: { env: 'K' }, header: 'X-Api-Key', format: `Token ${PH} (${PH})` }), {
    baseDir: dir,
    env: { K: 'a$&b$1' },
  });
  const out = await applied(c, outbound('/x', { 'x-api-key': 'agent-supplied' }));
  t.same(out.headers, { 'x-api-key': 'Token a$&b$1 (a$&b$1)' });
});

t.test('the rendered credential is cached until the secret changes', async (t) => {
  const path = join(dir, 'rot');
  await writeFile(path, 'one\n');
  const c = createConnector(def({ name: 'c', type: 'static', secret: { file: 'rot' }, format: `Bearer ${PH}` }), { baseDir: dir });
  await c.provision();
  const first = await c.getCredential(ctx);
  t.equal(await c.getCredential(ctx), first, 'the same object while unchanged');
  await writeFile(`${path}.new`, 'two\n');
  await rename(`${path}.new`, path);
  await new Promise((r) => setTimeout(r, SECRET_RECHECK_MS + 50));
  const second = await c.getCredential(ctx);
  t.not(second, first);
  const out = outbound();
  c.apply(second, out);
  t.equal(out.headers.authorization, 'Bearer two');
});

t.test('credentialNow(): the cached credential while no check is due, else nothing', async (t) => {
  const path = join(dir, 'now');
  await writeFile(path, 'one\n');
  const c = createConnector(def({ name: 'n', type: 'static', secret: { file: 'now' }, format: `Bearer ${PH}` }), { baseDir: dir });
  t.equal(c.credentialNow?.(ctx), undefined, 'nothing before the first read');
  await c.provision();
  const first = await c.getCredential(ctx);
  t.equal(c.credentialNow?.(ctx), first, 'the same object getCredential gave');
  await writeFile(`${path}.new`, 'two\n');
  await rename(`${path}.new`, path);
  await new Promise((r) => setTimeout(r, SECRET_RECHECK_MS + 50));
  t.equal(c.credentialNow?.(ctx), undefined, 'the file is due for a check: left to getCredential');
  const second = await c.getCredential(ctx);
  t.not(second, first);
  t.equal(c.credentialNow?.(ctx), second, 'the rotated value once read');
  await rm(path);
  await new Promise((r) => setTimeout(r, SECRET_RECHECK_MS + 50));
  t.equal(c.credentialNow?.(ctx), undefined);
  t.equal((await refusal(c)).code, 'connector_unavailable', 'a removed secret is refused, not served from memory');
  t.equal(c.credentialNow?.(ctx), undefined);

  const env = createConnector(def({ name: 'e', type: 'static', secret: { env: 'K' } }), { baseDir: dir, env: { K: 'sk' } });
  await env.provision();
  t.equal(env.credentialNow?.(ctx), await env.getCredential(ctx), 'an env secret never needs a check');
});

t.test('query: set, URL-encoded, replacing every copy the agent sent', async (t) => {
  const c = createConnector(def({ name: 'q', type: 'static', secret: { env: 'K' }, query: 'api_key' }), { baseDir: dir, env: { K: 'a b&c=d/é' } });
  const enc = 'api_key=a%20b%26c%3Dd%2F%C3%A9';
  t.equal((await applied(c, outbound('/v1/items'))).path, `/v1/items?${enc}`);
  t.equal((await applied(c, outbound('/v1/items?'))).path, `/v1/items?${enc}`);
  t.equal(
    (await applied(c, outbound('/v1/items?a=1&api_key=mine&b=2&api%5Fkey=x&api_key&api_keyX=keep&api+key=keep2&c=%ZZ'))).path,
    `/v1/items?a=1&b=2&api_keyX=keep&api+key=keep2&c=%ZZ&${enc}`,
  );
  t.equal(setQueryParam('/p?x=1&&y=2', 'k', 'k=v'), '/p?x=1&y=2&k=v', 'empty pieces dropped');
  t.equal(setQueryParam('/p?my%20key=1&my+key=2', 'my key', 'my%20key=s'), '/p?my%20key=s', 'names compared decoded, "+" as space');
});

t.test('query: a copy under a name upstreams may read as the same parameter is refused, not sent beside the credential', async (t) => {
  const c = createConnector(def({ name: 'q2', type: 'static', secret: { env: 'K' }, query: 'api_key' }), { baseDir: dir, env: { K: 'secret' } });
  await c.provision();
  const credential = await c.getCredential(ctx);
  for (const query of ['API_KEY=up', 'Api_Key=x', 'api_key[]=arr', '%20api_key=sp', 'api_key%20=sp', 'x=1;api_key=agent', 'x=1;API_KEY=agent', 'api_key;x=1']) {
    const out = outbound(`/v1/items?${query}`);
    t.throws(() => c.apply(credential, out), { code: 'bad_request' }, query);
  }
  const fine = outbound('/v1/items?api_keys=1&x=api_key&my_api_key=2');
  c.apply(credential, fine);
  t.equal(fine.path, '/v1/items?api_keys=1&x=api_key&my_api_key=2&api_key=secret', 'other names, and the name as a value, stay');
});

t.test('header: the agent\'s copy under an underscore spelling is removed (CGI reads X_Api_Key as X-Api-Key)', async (t) => {
  const c = createConnector(def({ name: 'hx', type: 'static', secret: { env: 'K' }, header: 'X-Api-Key' }), { baseDir: dir, env: { K: 'secret' } });
  const out = await applied(c, outbound('/x', { x_api_key: 'agent', 'x_api-key': 'agent', 'x-api_key': 'agent', 'x-api-key': 'agent', x_other: 'kept' }));
  t.same(out.headers, { 'x-api-key': 'secret', x_other: 'kept' });
});

t.test('header configured with underscores: the agent\'s dashed copy is removed too', async (t) => {
  const c = createConnector(def({ name: 'hu', type: 'static', secret: { env: 'K' }, header: 'X_Api_Key' }), { baseDir: dir, env: { K: 'secret' } });
  const out = await applied(c, outbound('/x', { 'x-api-key': 'agent', 'x_api-key': 'agent', x_other: 'kept' }));
  t.same(out.headers, { x_api_key: 'secret', x_other: 'kept' });
});

t.test('a secret file that is not valid UTF-8 is refused, not sent with replacement characters', async (t) => {
  await writeFile(join(dir, 'latin1'), Buffer.from([0x70, 0xe4, 0x73, 0x73])); // "päss" in Latin-1
  await writeFile(join(dir, 'cut'), Buffer.from('ключ').subarray(0, 7)); // the last character cut in half
  for (const [file, shape] of [
    ['latin1', { basic: { username: { env: 'U' }, password: { file: 'latin1' } } }],
    ['cut', { secret: { file: 'cut' }, query: 'key' }],
    ['cut', { secret: { file: 'cut' }, header: 'X-Key' }],
  ] as const) {
    const c = createConnector(def({ name: 'u8', type: 'static', ...shape }), { baseDir: dir, env: { U: 'svc' } });
    const e = await refusal(c);
    t.equal(e.code, 'connector_unavailable', file);
    t.match(explainFailure(e), /not valid UTF-8/, file);
  }
});

t.test('basic: Authorization Basic base64(user:pass), each from its own source', async (t) => {
  await writeFile(join(dir, 'pw'), 'pa:ss wörd\n');
  const c = createConnector(def({ name: 'basic', type: 'static', basic: { username: { env: 'U' }, password: { file: 'pw' } } }), {
    baseDir: dir,
    env: { U: 'svc-user' },
  });
  const out = await applied(c, outbound('/x', { authorization: 'Bearer agent' }));
  t.equal(out.headers.authorization, `Basic ${Buffer.from('svc-user:pa:ss wörd').toString('base64')}`);
  const colon = createConnector(def({ name: 'basic2', type: 'static', basic: { username: { env: 'U' }, password: { env: 'P' } } }), {
    baseDir: dir,
    env: { U: 'us:er', P: 'p' },
  });
  t.match(explainFailure(await refusal(colon)), /user name from env U contains ":"/);
});

t.test('control characters in a secret are refused, never put on the request', async (t) => {
  const bad = ['abc\r\nX-Injected: 1', 'a\nb', 'nul\u0000', 'tab\there', 'del\u007f'];
  for (const secret of bad) {
    for (const shape of [{ header: 'X-Key' }, { query: 'k' }]) {
      const c = createConnector(def({ name: 'x', type: 'static', secret: { env: 'K' }, ...shape }), { baseDir: dir, env: { K: secret } });
      const e = await refusal(c);
      t.equal(e.code, 'connector_unavailable', JSON.stringify(secret));
      t.match(explainFailure(e), /env K contains control characters/);
      t.notOk(`${e.message}${explainFailure(e)}`.includes(secret), 'the value is not in the error');
      await t.rejects(c.provision(), { code: 'connector_unavailable' });
    }
    const basic = createConnector(def({ name: 'x', type: 'static', basic: { username: { env: 'U' }, password: { env: 'K' } } }), {
      baseDir: dir,
      env: { U: 'u', K: secret },
    });
    t.equal((await refusal(basic)).code, 'connector_unavailable');
  }
  // A header loses leading and trailing whitespace on the wire; a query parameter keeps it.
  for (const secret of [' lead', 'trail ', '   ']) {
    const h = createConnector(def({ name: 'ws', type: 'static', secret: { env: 'K' } }), { baseDir: dir, env: { K: secret } });
    t.match(explainFailure(await refusal(h)), secret.trim() === '' ? /environment variable K is not set, empty or only whitespace/ : /starts or ends with whitespace/, JSON.stringify(secret));
  }
  const spaced = createConnector(def({ name: 'qs', type: 'static', secret: { env: 'K' }, query: 'k' }), { baseDir: dir, env: { K: ' s ' } });
  t.equal((await applied(spaced, outbound('/'))).path, '/?k=%20s%20');
  // A header cannot carry characters beyond Latin-1; a query parameter can (percent-encoded).
  const env = { K: 'ключ' };
  t.match(explainFailure(await refusal(createConnector(def({ name: 'h', type: 'static', secret: { env: 'K' } }), { baseDir: dir, env }))), /a header cannot carry/);
  const q = createConnector(def({ name: 'q', type: 'static', secret: { env: 'K' }, query: 'k' }), { baseDir: dir, env });
  t.equal((await applied(q, outbound('/'))).path, `/?k=${encodeURIComponent('ключ')}`);
});

t.test('definitions that would corrupt the request are refused when created', async (t) => {
  for (const header of ['Host', 'content-length', 'Transfer-Encoding', 'Connection']) {
    t.throws(() => createConnector(def({ name: 'h', type: 'static', secret: { env: 'K' }, header }), { baseDir: dir }), /cannot carry a credential/, header);
  }
  t.throws(() => createConnector(def({ name: 'h', type: 'static', secret: { env: 'K' }, format: `x\r\n${PH}` }), { baseDir: dir }), /format holds/);
});

t.test('applied credentials arrive as set over a real HTTP request', async (t) => {
  let got: { url?: string; headers?: IncomingHttpHeaders } = {};
  const server = createServer((req, res) => {
    got = { url: req.url, headers: req.headers };
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  const env = { K: 'sk-live', U: 'user', P: 'pass' };
  const header = createConnector(def({ name: 'h', type: 'static', secret: { env: 'K' }, header: 'X-Api-Key', format: `Key ${PH}` }), { baseDir: dir, env });
  const query = createConnector(def({ name: 'q', type: 'static', secret: { env: 'K' }, query: 'key' }), { baseDir: dir, env });
  const basic = createConnector(def({ name: 'b', type: 'static', basic: { username: { env: 'U' }, password: { env: 'P' } } }), { baseDir: dir, env });
  const out = outbound('/items?key=agent&x=1', { 'x-api-key': 'agent' });
  for (const c of [header, query, basic]) await applied(c, out);
  await new Promise<void>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: out.method, path: out.path, headers: out.headers }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(got.url, '/items?x=1&key=sk-live');
  t.equal(got.headers?.['x-api-key'], 'Key sk-live');
  t.equal(got.headers?.authorization, `Basic ${Buffer.from('user:pass').toString('base64')}`);
});
