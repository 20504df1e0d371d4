import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { computeKid, loadPemPublicKey } from '../../src/auth/keys.js';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import { agentToken, brokerConfig, code, KID, nowSeconds, privateKey, publicKey, writeKeyFiles } from './helpers.js';

const dir = t.testdir({});
const files = writeKeyFiles(dir);
const other = generateKeyPairSync('ed25519');
const otherKid = computeKid(other.publicKey);
const jwk = (k = publicKey) => k.export({ format: 'jwk' });
const header = (kid?: string) => JSON.stringify(kid === undefined ? { alg: 'EdDSA', typ: 'JWT' } : { alg: 'EdDSA', typ: 'JWT', kid });
const token = (kid?: string, key = other.privateKey) => agentToken({ exp: nowSeconds() + 60 }, key, header(kid));

t.test('a PKCS#8 private key file yields only its public key', async (t) => {
  const k = await loadPemPublicKey(files.pkcs8);
  t.equal(k.type, 'public');
  t.equal(computeKid(k), KID);
});

t.test('JWKS file: keys selected by kid or thumbprint', async (t) => {
  const file = join(dir, 'two.json');
  writeFileSync(
    file,
    JSON.stringify({
      keys: [
        { ...jwk(), kid: 'broker-2027' },
        jwk(other.publicKey),
        { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA', kid: 'ignored' },
        { ...jwk(generateKeyPairSync('ed25519').publicKey), use: 'enc', kid: 'enc-key' },
      ],
    }),
  );
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', jwksFile: file }));
  t.teardown(() => v.close());
  t.equal(await code(v.verify(token('broker-2027', privateKey))), 'ok', 'selected by its JWKS kid');
  t.equal(await code(v.verify(token(KID, privateKey))), 'ok', 'the same key selected by its thumbprint');
  t.equal(await code(v.verify(token('broker-2027'))), 'token_invalid', 'kid names one key, signed by another');
  t.equal(await code(v.verify(token(otherKid))), 'ok', 'JWK without kid matched by its thumbprint');
  t.equal(await code(v.verify(token('nope'))), 'token_invalid', 'unknown kid');
  t.equal(await code(v.verify(token(undefined))), 'token_invalid', 'no kid and several keys: ambiguous');
  t.equal(await code(v.verify(token('enc-key'))), 'token_invalid', 'encryption key is not used');

  const single = join(dir, 'one.json');
  writeFileSync(single, JSON.stringify({ keys: [jwk(other.publicKey)] }));
  const v1 = await createTokenVerifier(brokerConfig({ verify: 'offline', jwksFile: single }));
  t.equal(await code(v1.verify(token(undefined))), 'ok', 'no kid and exactly one key');
  await v1.close();

  const empty = join(dir, 'empty.json');
  writeFileSync(empty, JSON.stringify({ keys: [{ kty: 'EC' }] }));
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline', jwksFile: empty })), /no Ed25519 signing key/);
  const notJson = join(dir, 'bad.json');
  writeFileSync(notJson, '{');
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline', jwksFile: notJson })), /not valid JSON/);
});

t.test('JWKS URL: not ready until the first fetch succeeds', async (t) => {
  let up = false;
  let fetches = 0;
  const server = createServer((_req, res) => {
    fetches++;
    if (!up) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...jwk(other.publicKey), kid: otherKid }] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', jwksUrl: url, timeout: '500ms' }));
  t.teardown(() => v.close());
  t.equal(v.ready(), false);
  t.equal(await code(v.verify(token(otherKid))), 'broker_unavailable', 'no key yet: refuse, never allow');
  up = true;
  const started = Date.now();
  while (!v.ready() && Date.now() - started < 5000) await sleep(50);
  t.equal(v.ready(), true, 'retried in the background until the key set loaded');
  t.equal(await code(v.verify(token(otherKid))), 'ok');
  t.equal(await code(v.verify(token(KID, privateKey))), 'token_invalid', 'kid not in the set');
  t.ok(fetches >= 2);
});

t.test('JWKS URL: fetched again every jwksRefresh; a changed set drops cached answers, a failed fetch keeps the keys', async (t) => {
  let answer: { status: number; body: string } = { status: 200, body: JSON.stringify({ keys: [jwk()] }) };
  let fetches = 0;
  const server = createServer((_req, res) => {
    fetches++;
    res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  // A query that carries a credential: reports show the URL without it.
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  const url = `${base}?access_token=jwks-query-SECRET`;
  const changed: string[][] = [];
  const failed: string[] = [];
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', jwksUrl: url, jwksRefresh: '1s', timeout: '500ms' }), {
    observer: {
      verification: () => {},
      revalidation: () => {},
      keyReload: (result, d) => {
        if (result === 'success') changed.push([d.file, ...(d.kids ?? [])]);
        else failed.push(`${d.file} ${d.reason}`);
      },
    },
  });
  t.teardown(() => v.close());
  const until = async (cond: () => boolean) => {
    const end = Date.now() + 5000;
    while (!cond() && Date.now() < end) await sleep(25);
  };
  await until(() => v.ready());
  const a = token(KID, privateKey);
  t.equal(await code(v.verify(a)), 'ok');
  t.equal(v.cached(a)?.source, 'cache');

  // The same set again: nothing changes.
  const before = fetches;
  await until(() => fetches >= before + 2);
  t.same([changed, failed], [[], []], 'the same set answered again is no change');
  t.equal(v.cached(a)?.source, 'cache');

  // The broker's answer fails for a while: the keys in service stay, reported once.
  answer = { status: 503, body: '' };
  const failingFrom = fetches;
  await until(() => fetches >= failingFrom + 2);
  t.same(failed, [`${base} HTTP 503`], 'reported once while it keeps failing, without the query');
  t.equal(await code(v.verify(a)), 'ok', 'the keys in service stay');

  // Rotated: only the next key is published. Answers cached under the old set are dropped.
  answer = { status: 200, body: JSON.stringify({ keys: [jwk(other.publicKey)] }) };
  await until(() => changed.length === 1);
  t.same(changed, [[base, otherKid]]);
  t.equal(v.cached(a), undefined, 'the cached answer is gone');
  t.equal(await code(v.verify(a)), 'token_invalid', 'a token of the key no longer published is refused');
  t.equal(await code(v.verify(token(otherKid))), 'ok', 'the next key serves');
});

t.test('JWKS URL unreachable: not ready, refuses', async (t) => {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', jwksUrl: `http://127.0.0.1:${port}/jwks`, timeout: '300ms' }));
  t.teardown(() => v.close());
  t.equal(v.ready(), false);
  t.equal(await code(v.verify(token(otherKid))), 'broker_unavailable');
});

t.test('JWKS URL answering more than 256 KiB: not taken, refuses', async (t) => {
  const padding = 'x'.repeat(300 * 1024);
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...jwk(other.publicKey), kid: otherKid }], padding }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`, timeout: '500ms' }));
  t.teardown(() => v.close());
  await sleep(300);
  t.equal(v.ready(), false);
  t.equal(await code(v.verify(token(otherKid))), 'broker_unavailable');
});

t.test('a key file that cannot be read at start: the setting, the file and the errno', async (t) => {
  const dir = t.testdir({});
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: join(dir, 'missing.pem') })), {
    message: `broker.publicKeyFile ${join(dir, 'missing.pem')} cannot be read: ENOENT`,
  });
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline', jwksFile: dir })), { message: `broker.jwksFile ${dir} cannot be read: EISDIR` });
});
