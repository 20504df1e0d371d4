import { createHash, sign } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { goJson } from '../../src/auth/delegation.js';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import type { SidecarError } from '../../src/errors.js';
import { agentToken, brokerConfig, code, nowSeconds, privateKey, recorder, signJwt, writeKeyFiles } from './helpers.js';
import { startValidateBroker } from '../helpers/validate-broker.js';

const files = writeKeyFiles(t.testdir({}));
const fresh = (extra: Partial<Parameters<typeof agentToken>[0]> = {}) => agentToken({ exp: nowSeconds() + 300, ...extra });

/** A hybrid verifier reporting to a recorder, against a validate broker answering `valid`; both closed after the test. */
async function hybridAgainstBroker(t: Test, revalidateAfter: string) {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  const rec = recorder();
  const v = await createTokenVerifier(
    brokerConfig({ url: broker.url, verify: 'hybrid', publicKeyFile: files.spki, revalidateAfter, timeout: '500ms' }),
    { observer: rec.observer },
  );
  t.teardown(() => v.close());
  return { broker, rec, v };
}

t.test('hybrid: a token the broker starts refusing is refused within revalidateAfter', async (t) => {
  const { broker, rec, v } = await hybridAgainstBroker(t, '200ms');
  const token = fresh();
  t.equal((await v.verify(token)).source, 'online', 'first use asks the broker');
  t.equal((await v.verify(token)).source, 'cache');
  t.equal(broker.calls, 1);

  broker.mode = 'invalid';
  const switched = Date.now();
  let refusedWith = '';
  while (Date.now() - switched < 2000) {
    refusedWith = await code(v.verify(token));
    if (refusedWith !== 'ok') break;
    await sleep(20);
  }
  const took = Date.now() - switched;
  t.equal(refusedWith, 'token_revoked');
  t.ok(took <= 200 + 150, `refused ${took} ms after the broker changed its answer`);
  const calls = broker.calls;
  t.equal(await code(v.verify(token)), 'token_revoked', 'still refused');
  t.equal(broker.calls, calls, 'the revocation is cached: no further broker call');
  t.ok(rec.verifications.includes('revoked/cache'));
  t.same(rec.revalidations.slice(0, 1), ['valid']);
  t.equal(rec.revalidations.at(-1), 'invalid');
});

t.test('hybrid: valid:false on first sight after a good offline check is token_revoked', async (t) => {
  const broker = await startValidateBroker('invalid');
  t.teardown(() => broker.close());
  const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: 'hybrid', publicKeyFile: files.spki }));
  t.teardown(() => v.close());
  const e = await v.verify(fresh()).catch((x: SidecarError) => x);
  t.equal((e as SidecarError).code, 'token_revoked');
  t.equal((e as SidecarError).detail, 'token has been revoked or released');
  t.equal(await code(v.verify('garbage.token.here')), 'token_invalid', 'a forged token never reaches the broker');
  t.equal(broker.calls, 1);
});

t.test('online mode: broker answer is the identity, cached for revalidateAfter', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: 'online', revalidateAfter: '150ms', timeout: '500ms' }));
  t.teardown(() => v.close());
  t.equal(v.ready(), true, 'no key needed');
  const token = fresh({ sub: 'spiffe://agentwrit.local/agent/o/t/0000000000000001', scope: ['read:billing:customer-1'] });
  const first = await v.verify(token);
  t.equal(first.source, 'online');
  t.equal(first.identity.sub, 'spiffe://agentwrit.local/agent/o/t/0000000000000001');
  t.same(first.identity.scopes, ['read:billing:customer-1']);
  t.equal((await v.verify(token)).source, 'cache');
  t.equal(broker.calls, 1);
  await sleep(170);
  t.equal((await v.verify(token)).source, 'online', 'asked again once the answer is older than revalidateAfter');
  t.equal(broker.calls, 2);

  broker.mode = 'invalid';
  t.equal(await code(v.verify(fresh())), 'token_invalid', 'valid:false for an unknown token is token_invalid');
  await sleep(170);
  t.equal(await code(v.verify(token)), 'token_revoked', 'a token the broker confirmed before and now refuses is revoked');
});

t.test('audience is enforced even when the broker says valid', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  for (const mode of ['online', 'hybrid'] as const) {
    const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: mode, publicKeyFile: files.spki, audience: 'sidecar-a' }));
    t.equal(await code(v.verify(fresh({ aud: ['sidecar-b'] }))), 'token_invalid', `${mode}: other audience`);
    t.equal(await code(v.verify(fresh())), 'token_invalid', `${mode}: no aud at all`);
    t.equal(await code(v.verify(fresh({ aud: ['sidecar-a'] }))), 'ok', `${mode}: our audience`);
    await v.close();
  }
  const issuer = await createTokenVerifier(brokerConfig({ url: broker.url, verify: 'online', issuer: 'https://broker.example' }));
  t.equal(await code(issuer.verify(fresh({ iss: 'https://other.example' }))), 'token_invalid', 'issuer enforced online too');
  await issuer.close();
});

t.test('online: a token the broker vouches for but this sidecar refuses (audience) is refused from the cache', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: 'online', audience: 'sidecar-a' }));
  t.teardown(() => v.close());
  const other = fresh({ aud: ['sidecar-b'] });
  for (let i = 0; i < 20; i++) t.equal(await code(v.verify(other)), 'token_invalid');
  t.equal(broker.calls, 1, 'one broker call, not one per request');
});

/**
 * A validate endpoint that decides when a question arrives (as a broker does) and answers after
 * `delayMs`: a slow broker, within broker.timeout.
 */
async function decidingBroker(t: Test) {
  const st = { revoked: false, delayMs: 0, calls: 0, url: '' };
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c;
    });
    req.on('end', () => {
      st.calls++;
      const claims = Buffer.from((JSON.parse(body) as { token: string }).token.split('.')[1], 'base64url').toString();
      const out = st.revoked ? '{"valid":false,"error":"token is invalid or expired"}' : `{"valid":true,"claims":${claims}}`;
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(out), st.delayMs);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    srv.closeAllConnections();
    srv.close();
  });
  st.url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return st;
}

for (const mode of ['hybrid', 'online'] as const) {
  t.test(`${mode}: a request does not wait on a broker call sent longer than revalidateAfter ago`, async (t) => {
    const broker = await decidingBroker(t);
    const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: mode, publicKeyFile: files.spki, revalidateAfter: '300ms', timeout: '5s' }));
    t.teardown(() => v.close());
    const token = fresh();
    t.equal(await code(v.verify(token)), 'ok');
    await sleep(350);
    broker.delayMs = 1500;
    // Past the window: this request asks the broker, which decides "valid" at once and answers late.
    const first = code(v.verify(token));
    await sleep(50);
    broker.revoked = true;
    await sleep(600);
    // 650 ms after that call was sent: its answer would be older than revalidateAfter.
    t.equal(await code(v.verify(token)), 'token_revoked', 'asked again, and refused');
    t.equal(await first, 'ok', 'the request that sent the earlier call gets its answer');
    t.equal(broker.calls, 3, 'first sight, the late call, the one asked again');
  });

  t.test(`${mode}: answers age by a clock that only moves forward, not by the wall clock`, async (t) => {
    const broker = await startValidateBroker('valid');
    t.teardown(() => broker.close());
    let wall = Date.now();
    let mono = 1_000_000;
    const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: mode, publicKeyFile: files.spki, revalidateAfter: '2s' }), {
      now: () => wall,
      monotonic: () => mono,
    });
    t.teardown(() => v.close());
    const token = agentToken({ exp: nowSeconds() + 3600, iat: nowSeconds() - 1 });
    t.equal(await code(v.verify(token)), 'ok');
    broker.mode = 'invalid';
    // The wall clock is stepped back ten minutes, then nine minutes go by.
    wall -= 10 * 60_000;
    wall += 9 * 60_000;
    mono += 9 * 60_000;
    t.equal(await code(v.verify(token)), 'token_revoked', 'the answer from nine minutes ago is not used');
  });
}

t.test('broker trouble fails closed with broker_unavailable', async (t) => {
  for (const mode of ['online', 'hybrid'] as const) {
    const broker = await startValidateBroker('valid');
    const rec = recorder();
    const v = await createTokenVerifier(
      brokerConfig({ url: broker.url, verify: mode, publicKeyFile: files.spki, timeout: '200ms', revalidateAfter: '2s' }),
      { observer: rec.observer },
    );
    for (const trouble of ['error500', 'badjson', 'slow', 'hang'] as const) {
      broker.mode = trouble;
      const started = Date.now();
      const e = (await v.verify(fresh()).catch((x) => x)) as SidecarError;
      t.equal(e.code, 'broker_unavailable', `${mode}/${trouble}`);
      t.equal(e.status, 503);
      t.ok(Date.now() - started < 900, `${mode}/${trouble}: within the timeout`);
    }
    broker.mode = 'valid';
    const token = fresh();
    t.equal(await code(v.verify(token)), 'ok', `${mode}: recovers with the broker`);
    await broker.close();
    t.equal(await code(v.verify(fresh())), 'broker_unavailable', `${mode}: broker down (connection refused)`);
    t.ok(rec.verifications.includes('unavailable/online'));
    t.ok(rec.revalidations.includes('error'));
    await v.close();
  }
});

t.test('hybrid: a stale entry is not served when the broker is down', async (t) => {
  const broker = await startValidateBroker('valid');
  let now = Date.now();
  const v = await createTokenVerifier(
    brokerConfig({ url: broker.url, verify: 'hybrid', publicKeyFile: files.spki, timeout: '200ms', revalidateAfter: '1s' }),
    { now: () => now },
  );
  t.teardown(() => v.close());
  const token = fresh();
  t.equal(await code(v.verify(token)), 'ok');
  await broker.close();
  now += 500;
  t.equal((await v.verify(token)).source, 'cache', 'inside the window the cached answer stands');
  now += 600;
  t.equal(await code(v.verify(token)), 'broker_unavailable', 'past the window, no answer means no');
});

t.test('single flight: concurrent requests with one token share one broker call', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  broker.delayMs = 80;
  for (const mode of ['online', 'hybrid'] as const) {
    let now = Date.now();
    const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: mode, publicKeyFile: files.spki, revalidateAfter: '1s' }), {
      now: () => now,
    });
    const token = fresh();
    const before = broker.calls;
    const first = await Promise.all(Array.from({ length: 25 }, () => v.verify(token)));
    t.equal(broker.calls - before, 1, `${mode}: 25 cold requests, one validate call`);
    t.ok(first.every((r) => r.identity.jti === first[0].identity.jti));
    now += 1500;
    const again = await Promise.all(Array.from({ length: 25 }, () => v.verify(token)));
    t.equal(broker.calls - before, 2, `${mode}: 25 requests needing revalidation, one more call`);
    t.ok(again.every((r) => r.source === 'online'));
    const other = fresh();
    await Promise.all([v.verify(other), v.verify(fresh()), v.verify(other)]);
    t.equal(broker.calls - before, 4, `${mode}: different tokens are not merged`);
    await v.close();
  }
});

t.test('online mode checks a delegation chain with the key when one is configured', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  const v = await createTokenVerifier(brokerConfig({ url: broker.url, verify: 'online', publicKeyFile: files.spki }));
  t.teardown(() => v.close());
  const at = '2027-01-15T12:00:00.5Z';
  const root = 'spiffe://agentwrit.local/agent/o/t/aaaa';
  const scope = ['read:data:a<b>&c', 'read:data:*'];
  const signature = sign(null, Buffer.from(`${root}|${scope.join(',')}|${at}`), privateKey).toString('hex');
  const chain = [{ agent: root, scope, delegated_at: at, signature }];
  const build = (c: unknown[], hash?: string) => {
    const json = goJson(c);
    const h = hash ?? createHash('sha256').update(json).digest('hex');
    return signJwt(
      `{"iss":"","sub":"spiffe://agentwrit.local/agent/o/t/bbbb","exp":${nowSeconds() + 60},"nbf":0,"iat":0,"jti":"j${Math.random()}","scope":["read:data:x"],"delegation_chain":${json},"chain_hash":"${h}"}`,
    );
  };
  const ok = await v.verify(build(chain));
  t.equal(ok.identity.chainRoot, root);
  t.equal(ok.identity.delegationDepth, 1);
  t.equal(await code(v.verify(build([{ ...chain[0], signature: '00'.repeat(64) }]))), 'token_invalid', 'bad record signature');
  t.equal(await code(v.verify(build(chain, 'ab'.repeat(32)))), 'token_invalid', 'bad chain_hash');
});

t.test('cached(): answers at once only for a recently checked token, and never refuses', async (t) => {
  const { broker, rec, v } = await hybridAgainstBroker(t, '150ms');
  const token = fresh();
  t.equal(v.cached(token), undefined, 'never seen: no answer without verify()');
  t.equal(v.cached(''), undefined);
  t.equal(v.cached('x'.repeat(70_000)), undefined);
  await v.verify(token);
  const hit = v.cached(token);
  t.equal(hit?.source, 'cache');
  t.equal(hit?.identity.sub, (await v.verify(token)).identity.sub);
  t.equal(rec.verifications.filter((x) => x === 'ok/cache').length, 2, 'a hit is counted like one from verify()');
  const i = token.length - 10;
  const other = `${token.slice(0, i)}${token[i] === 'A' ? 'B' : 'A'}${token.slice(i + 1)}`;
  t.equal(v.cached(other), undefined, 'another signature is another token');

  await sleep(200);
  t.equal(v.cached(token), undefined, 'due for revalidation: left to verify()');
  broker.mode = 'invalid';
  t.equal(await code(v.verify(token)), 'token_revoked');
  t.equal(v.cached(token), undefined, 'a cached refusal is not an answer');
  t.equal(await code(v.verify(token)), 'token_revoked', 'verify() still refuses it');

  broker.mode = 'valid';
  const exp = nowSeconds() + 1;
  const shortLived = agentToken({ exp });
  await v.verify(shortLived);
  t.equal(v.cached(shortLived)?.source, 'cache');
  await sleep((exp + 1) * 1000 - Date.now() + 50); // valid through the second exp names
  t.equal(v.cached(shortLived), undefined, 'an expired entry is no answer');
  t.equal(await code(v.verify(shortLived)), 'token_expired');
  t.equal(rec.verifications.at(-1), 'expired/cache', 'refused from the cache entry cached() left in place');
});

/** Polls until `cond` holds (background work on real sockets); fails the test after 3 s. */
async function until(t: Test, cond: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !cond(); waited += 5) {
    if (waited > 3000) {
      t.fail(`timed out waiting: ${what}`);
      return;
    }
    await sleep(5);
  }
  await sleep(5); // the call's answer is applied a few microtasks after it is counted
}

t.test('a token in steady use is revalidated ahead: no request waits for the broker, none uses an answer past the window', async (t) => {
  const broker = await startValidateBroker('valid');
  t.teardown(() => broker.close());
  for (const mode of ['online', 'hybrid'] as const) {
    broker.mode = 'valid';
    let now = Date.now();
    const rec = recorder();
    const v = await createTokenVerifier(
      brokerConfig({ url: broker.url, verify: mode, publicKeyFile: files.spki, revalidateAfter: '1s', timeout: '500ms' }),
      { now: () => now, observer: rec.observer },
    );
    const token = fresh();
    const before = broker.calls;
    await v.verify(token);
    t.equal(broker.calls - before, 1, `${mode}: first sight asks the broker`);

    now += 700;
    t.equal(v.cached(token)?.source, 'cache', `${mode}: within the first 3/4 of revalidateAfter, a plain hit`);
    await sleep(20);
    t.equal(broker.calls - before, 1, `${mode}: and no call`);

    now += 100;
    const early = [v.cached(token), v.cached(token), await v.verify(token)];
    t.ok(
      early.every((r) => r?.source === 'cache'),
      `${mode}: in the last quarter, still answered from the cache at once`,
    );
    await until(t, () => rec.revalidations.length === 2, 'the background revalidation');
    t.equal(broker.calls - before, 2, `${mode}: three requests in the last quarter, one background call`);

    now += 900; // 1.7 s after the first answer, 0.9 s after the one asked in the background
    t.equal(v.cached(token)?.source, 'cache', `${mode}: the answer from the background call renews the window`);

    broker.mode = 'invalid';
    await until(t, () => rec.revalidations.length === 3, 'the next background revalidation');
    t.equal(rec.revalidations.at(-1), 'invalid');
    t.equal(v.cached(token), undefined, `${mode}: a refusal from a background call is not an answer`);
    t.equal(await code(v.verify(token)), 'token_revoked', `${mode}: and applies at once, before the window ends`);

    broker.mode = 'valid';
    const other = fresh();
    await v.verify(other);
    broker.mode = 'error500';
    now += 800;
    t.equal(v.cached(other)?.source, 'cache', `${mode}: answered while the background call fails`);
    await until(t, () => rec.revalidations.at(-1) === 'error', 'the failing background revalidation');
    now += 150;
    t.equal(v.cached(other)?.source, 'cache', `${mode}: a failed background call leaves the entry as it was`);
    now += 100;
    t.equal(v.cached(other), undefined, `${mode}: past revalidateAfter the old answer is never used`);
    t.equal(await code(v.verify(other)), 'broker_unavailable', `${mode}: and a broker that cannot answer refuses the request`);
    await v.close();
  }
});
