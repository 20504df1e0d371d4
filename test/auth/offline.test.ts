import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { goJson } from '../../src/auth/delegation.js';
import { computeKid, createTokenVerifier } from '../../src/auth/verifier.js';
import type { SidecarError } from '../../src/errors.js';
import { agentToken, b64, brokerConfig, HEADER, KID, privateKey, publicKey, recorder, signJwt, writeKeyFiles } from './helpers.js';

// Reference §13.
const AGENT_TOKEN =
  'eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhIQ1R3WEJ5Z3JTNGsifQ.eyJpc3MiOiIiLCJzdWIiOiJzcGlmZmU6Ly9hZ2VudHdyaXQubG9jYWwvYWdlbnQvb3JjaC0xL3Rhc2stMS8wMTIzNDU2Nzg5YWJjZGVmIiwiZXhwIjoxODAwMDAwMzAwLCJuYmYiOjE4MDAwMDAwMDAsImlhdCI6MTgwMDAwMDAwMCwianRpIjoiMDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmYiLCJzY29wZSI6WyJyZWFkOmRhdGE6KiIsIndyaXRlOmRhdGE6KiJdLCJ0YXNrX2lkIjoidGFzay0xIiwib3JjaF9pZCI6Im9yY2gtMSJ9.Jx1aIwn1WGkXQSpoDqYNtZ5xeCewvYtebnUImzEWkfYTinIta-NT56DiBrUr7fGkEexoRb5oXusF7WUa-A4fDw';
const AGENT_PAYLOAD =
  '{"iss":"","sub":"spiffe://agentwrit.local/agent/orch-1/task-1/0123456789abcdef","exp":1800000300,"nbf":1800000000,"iat":1800000000,"jti":"00112233445566778899aabbccddeeff","scope":["read:data:*","write:data:*"],"task_id":"task-1","orch_id":"orch-1"}';
const DELEGATOR = 'spiffe://agentwrit.local/agent/orch-1/task-1/0123456789abcdef';
const DELEGATED_AT = '2027-01-15T12:00:00.12345678Z';
const RECORD_MESSAGE = `${DELEGATOR}|read:data:*,write:data:*|${DELEGATED_AT}`;
const RECORD_SIGNATURE =
  'cdf54dc1ea38380eb68d2142b3487d2e0ec38d950ce43124d08f27643c50b646e7b7d85d11660e0fe76d6e318c1d6ecf2e18205597d49a2b2948ee25b68c0b00';
const CHAIN_HASH = '9a2cf7f3b1a83c596e898c4b567f12d5d3936fa78673e3f809eaa7f234274b24';
const DELEGATED_SIGNATURE = 'BRCRHfWYKtea6eMI7jE7lEO5KhYoLdosPxP1KYK1FZcyAuS76aw_Avm63b6AJzsT1ysZ4d4rd6iS9pk1mOxwAQ';

const IN_WINDOW = 1_800_000_100_000;
/** The delegated token lives 60 s. */
const DELEGATED_WINDOW = 1_800_000_030_000;

interface Rec {
  agent: string;
  scope: string[];
  delegated_at: string;
  signature: string;
}
function record(agent: string, scope: string[], at = DELEGATED_AT, key = privateKey): Rec {
  const signature = sign(null, Buffer.from(`${agent}|${scope.join(',')}|${at}`), key).toString('hex');
  return { agent, scope, delegated_at: at, signature };
}
/** A delegated token as the broker builds it: chain_hash over the Go encoding of the chain. */
function delegatedPayload(chain: Rec[], opts: { scope?: string[]; exp?: number; hash?: string; chainJson?: string } = {}): string {
  const chainJson = opts.chainJson ?? goJson(chain);
  const hash = opts.hash ?? createHash('sha256').update(chainJson).digest('hex');
  return `{"iss":"","sub":"spiffe://agentwrit.local/agent/orch-1/task-2/fedcba9876543210","exp":${opts.exp ?? 1800000060},"nbf":1800000000,"iat":1800000000,"jti":"ffeeddccbbaa99887766554433221100","scope":${JSON.stringify(opts.scope ?? ['read:data:customers'])},"task_id":"task-1","orch_id":"orch-1","delegation_chain":${chainJson},"chain_hash":"${hash}"}`;
}

const dir = t.testdir({});
const files = writeKeyFiles(dir);

async function offline(extra: Record<string, unknown> = {}, now = IN_WINDOW, observer?: ReturnType<typeof recorder>['observer']) {
  return createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: files.spki, ...extra }), { now: () => now, observer });
}

async function refusal(p: Promise<unknown>): Promise<SidecarError> {
  try {
    await p;
  } catch (e) {
    return e as SidecarError;
  }
  throw new Error('expected a refusal');
}

t.test('kid of the RFC 8032 test-1 key', async (t) => {
  t.equal(computeKid(publicKey), KID);
  t.equal(computeKid(privateKey), KID, 'a private key yields the kid of its public half');
  t.throws(() => computeKid(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey), TypeError);
});

t.test('reference agent token is reproduced byte for byte and verifies offline', async (t) => {
  t.equal(signJwt(AGENT_PAYLOAD), AGENT_TOKEN, 'Ed25519 is deterministic');
  const rec = recorder();
  const v = await offline({}, IN_WINDOW, rec.observer);
  t.equal(v.ready(), true);
  const { identity, source } = await v.verify(AGENT_TOKEN);
  t.equal(source, 'offline');
  t.strictSame(identity, {
    sub: DELEGATOR,
    jti: '00112233445566778899aabbccddeeff',
    iss: '',
    aud: [],
    exp: 1800000300,
    nbf: 1800000000,
    iat: 1800000000,
    scopes: ['read:data:*', 'write:data:*'],
    taskId: 'task-1',
    orchId: 'orch-1',
    delegationDepth: 0,
  });
  t.notOk('chainRoot' in identity || 'chainHash' in identity, 'chain members only on delegated tokens');
  t.ok(Object.isFrozen(identity), 'cached identities cannot be mutated by a caller');
  t.equal((await v.verify(AGENT_TOKEN)).source, 'cache', 'second use is a cache hit');
  t.same(rec.verifications, ['ok/offline', 'ok/cache']);
  await v.close();
});

t.test('time window: valid through the whole exp second, nbf honoured, leeway', async (t) => {
  const at = async (ms: number, extra = {}) => {
    const v = await offline(extra, ms);
    try {
      return (await v.verify(AGENT_TOKEN)).identity.sub;
    } catch (e) {
      return (e as SidecarError).code;
    } finally {
      await v.close();
    }
  };
  t.equal(await at(1_800_000_300_999), DELEGATOR, 'now == exp (seconds) is still valid, as in the broker');
  t.equal(await at(1_800_000_301_000), 'token_expired', 'one second after exp');
  t.equal(await at(1_800_000_000_000), DELEGATOR, 'now == nbf');
  t.equal(await at(1_799_999_999_999), 'token_invalid', 'before nbf');
  t.equal(await at(1_800_000_302_500, { leeway: '2s' }), DELEGATOR, 'leeway stretches exp');
  t.equal(await at(1_800_000_303_000, { leeway: '2s' }), 'token_expired', 'but only by the leeway');
  t.equal(await at(1_799_999_998_000, { leeway: '2s' }), DELEGATOR, 'leeway stretches nbf');
  const e = await refusal((await offline({}, 1_900_000_000_000)).verify(AGENT_TOKEN));
  t.equal(e.code, 'token_expired');
  t.equal(e.status, 401);
  t.equal(e.detail, 'token has expired');
});

t.test('tampered tokens are refused as token_invalid without echoing the token', async (t) => {
  const v = await offline();
  const [h, p, s] = AGENT_TOKEN.split('.');
  const flip = (seg: string) => seg.slice(0, 10) + (seg[10] === 'A' ? 'B' : 'A') + seg.slice(11);
  const other = generateKeyPairSync('ed25519');
  const cases: [string, string][] = [
    ['changed signature', `${h}.${p}.${flip(s)}`],
    ['changed payload', `${h}.${flip(p)}.${s}`],
    ['changed kid (re-signed with the right key)', signJwt(AGENT_PAYLOAD, '{"alg":"EdDSA","typ":"JWT","kid":"someone-else"}')],
    ['kid of another key', signJwt(AGENT_PAYLOAD, `{"alg":"EdDSA","typ":"JWT","kid":"${computeKid(other.publicKey)}"}`)],
    ['alg none', `${b64('{"alg":"none","typ":"JWT"}')}.${p}.`],
    ['alg HS256', `${b64(`{"alg":"HS256","typ":"JWT","kid":"${KID}"}`)}.${p}.${s}`],
    ['alg changed with the original signature', `${b64(`{"alg":"ES256","typ":"JWT","kid":"${KID}"}`)}.${p}.${s}`],
    ['signed by another key, our kid', signJwt(AGENT_PAYLOAD, HEADER, other.privateKey)],
    ['two segments', `${h}.${p}`],
    ['four segments', `${AGENT_TOKEN}.x`],
    ['garbage', 'not-a-jwt'],
    ['empty', ''],
    ['huge', 'a'.repeat(70_000)],
    ['payload not an object', signJwt('["x"]')],
    ['missing sub', signJwt(AGENT_PAYLOAD.replace(`"sub":"${DELEGATOR}",`, ''))],
    ['empty jti', signJwt(AGENT_PAYLOAD.replace('"00112233445566778899aabbccddeeff"', '""'))],
    ['missing exp', signJwt(AGENT_PAYLOAD.replace('"exp":1800000300,', ''))],
    ['exp not a number', signJwt(AGENT_PAYLOAD.replace('"exp":1800000300', '"exp":"1800000300"'))],
    ['scope not a list', signJwt(AGENT_PAYLOAD.replace('["read:data:*","write:data:*"]', '"read:data:*"'))],
  ];
  for (const [name, token] of cases) {
    const e = await refusal(v.verify(token));
    t.equal(e.code, 'token_invalid', name);
    if (token.length > 0) t.notOk(e.message.includes(token) || e.detail.includes(token), `${name}: token not echoed`);
  }
  t.equal((await v.verify(signJwt(AGENT_PAYLOAD, '{"alg":"EdDSA","typ":"JWT"}'))).identity.sub, DELEGATOR, 'absent kid accepted');
  t.equal(v.cacheSize(), 1, 'refused tokens are not cached');
  await v.close();
});

t.test('issuer and audience are enforced when configured', async (t) => {
  const exp = 1800000300;
  const tok = (iss: string, aud?: string[]) => agentToken({ exp, iss, aud });
  const v = await offline({ issuer: 'https://broker.example', audience: 'sidecar' });
  t.ok((await v.verify(tok('https://broker.example', ['other', 'sidecar']))).identity.sub);
  t.equal((await refusal(v.verify(tok('https://evil.example', ['sidecar'])))).code, 'token_invalid', 'wrong issuer');
  t.equal((await refusal(v.verify(tok('', ['sidecar'])))).code, 'token_invalid', 'empty issuer');
  t.equal((await refusal(v.verify(tok('https://broker.example', ['other'])))).code, 'token_invalid', 'audience missing from aud');
  t.equal((await refusal(v.verify(tok('https://broker.example')))).code, 'token_invalid', 'no aud');
  await v.close();
  const open = await offline();
  t.ok((await open.verify(tok('anything', ['whatever']))).identity, 'not checked when not configured');
  await open.close();
});

t.test('scope lists are told apart whatever characters their scopes hold', async (t) => {
  // The broker puts no limit on scope characters: one scope may hold a NUL, a comma or a quote.
  const exp = 1800000300;
  const lists = [
    ['read:data:x', 'write:data:y'],
    ['read:data:x\u0000write:data:y'],
    ['read:data:x,write:data:y'],
    ['read:data:x","write:data:y'],
  ];
  for (const order of [lists, [...lists].reverse()]) {
    const v = await offline();
    // Twice each: shared lists are only looked up once every member has been seen before.
    for (let round = 0; round < 2; round++) {
      for (const scope of order) t.same((await v.verify(agentToken({ exp, scope }))).identity.scopes, scope, JSON.stringify(scope));
    }
    await v.close();
  }
});

t.test('key file forms: SPKI, the broker PKCS#8 private key, JWKS', async (t) => {
  for (const extra of [{ publicKeyFile: files.pkcs8 }, { publicKeyFile: undefined, jwksFile: files.jwks }]) {
    const v = await createTokenVerifier(brokerConfig({ verify: 'offline', ...extra }), { now: () => IN_WINDOW });
    t.equal((await v.verify(AGENT_TOKEN)).identity.jti, '00112233445566778899aabbccddeeff', JSON.stringify(Object.keys(extra)));
    await v.close();
  }
  const ec = join(dir, 'ec.pem');
  writeFileSync(ec, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }));
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: ec })), /Ed25519/);
  const junk = join(dir, 'junk.pem');
  writeFileSync(junk, 'hello');
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: junk })), /not a PEM/);
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'offline' })), /needs broker.publicKeyFile/);
  await t.rejects(createTokenVerifier(brokerConfig({ verify: 'hybrid', publicKeyFile: files.spki })), /needs broker.url/);
});

t.test('reference delegated token rebuilt from its inputs', async (t) => {
  const rec = record(DELEGATOR, ['read:data:*', 'write:data:*']);
  t.equal(rec.signature, RECORD_SIGNATURE, 'record signature over the reference message');
  t.equal(`${rec.agent}|${rec.scope.join(',')}|${rec.delegated_at}`, RECORD_MESSAGE);
  const payload = delegatedPayload([rec]);
  t.equal(createHash('sha256').update(goJson([rec])).digest('hex'), CHAIN_HASH, 'chain_hash');
  const token = signJwt(payload);
  t.equal(token.split('.')[2], DELEGATED_SIGNATURE, 'signature segment equals the reference');
  const v = await offline({}, DELEGATED_WINDOW);
  const { identity } = await v.verify(token);
  t.equal(identity.delegationDepth, 1);
  t.equal(identity.chainRoot, DELEGATOR);
  t.equal(identity.chainHash, CHAIN_HASH);
  t.equal(identity.sub, 'spiffe://agentwrit.local/agent/orch-1/task-2/fedcba9876543210');
  t.same(identity.scopes, ['read:data:customers']);
  await v.close();
});

t.test('delegation chain checks', async (t) => {
  const v = await offline({}, DELEGATED_WINDOW);
  const A = 'spiffe://agentwrit.local/agent/o/t/aaaa';
  const B = 'spiffe://agentwrit.local/agent/o/t/bbbb';
  const r0 = record(A, ['read:data:*', 'write:data:*']);
  const r1 = record(B, ['read:data:*']);
  const ok = await v.verify(signJwt(delegatedPayload([r0, r1])));
  t.equal(ok.identity.delegationDepth, 2);
  t.equal(ok.identity.chainRoot, A);

  // Go escapes <, > and & in the chain the broker hashed; the raw payload text is what must be hashed.
  const odd = record(A, ['read:data:a<b>&c', 'read:data:*']);
  const goEncoded = goJson([odd]);
  t.match(goEncoded, /a\\u003cb\\u003e\\u0026c/);
  t.ok((await v.verify(signJwt(delegatedPayload([odd], { scope: ['read:data:a<b>&c'] })))).identity, 'hash over the raw Go text');
  const naiveHash = createHash('sha256').update(JSON.stringify([odd])).digest('hex');
  t.equal(
    (await refusal(v.verify(signJwt(delegatedPayload([odd], { scope: ['read:data:x'], hash: naiveHash }))))).code,
    'token_invalid',
    'a hash of the re-serialized chain does not match the Go text',
  );

  const bad: [string, string][] = [
    ['chain_hash mismatch', delegatedPayload([r0], { hash: '0'.repeat(64) })],
    ['chain_hash missing', delegatedPayload([r0]).replace(/,"chain_hash":"[0-9a-f]+"/, '')],
    ['record signed by another key', delegatedPayload([record(A, ['read:data:*'], DELEGATED_AT, generateKeyPairSync('ed25519').privateKey)])],
    ['record scope altered after signing', delegatedPayload([{ ...r0, scope: ['read:data:*', 'write:data:*', 'admin:x:*'] }])],
    ['record timestamp altered', delegatedPayload([{ ...r0, delegated_at: '2027-01-15T12:00:00.1234567Z' }])],
    ['signature not hex', delegatedPayload([{ ...r0, signature: 'zz' }])],
    ['empty chain', delegatedPayload([])],
    ['six records', delegatedPayload([r0, r0, r0, r0, r0, r0])],
    ['token scope wider than the last record', delegatedPayload([r1], { scope: ['write:data:x'] })],
    ['later record wider than earlier', delegatedPayload([r1, r0], { scope: ['read:data:x'] })],
    ['chain not a list', delegatedPayload([r0]).replace(/"delegation_chain":\[.*\],"chain_hash"/, '"delegation_chain":{},"chain_hash"')],
  ];
  for (const [name, payload] of bad) {
    t.equal((await refusal(v.verify(signJwt(payload)))).code, 'token_invalid', name);
  }
  const five = await v.verify(signJwt(delegatedPayload([r0, r0, r0, r0, r1])));
  t.equal(five.identity.delegationDepth, 5, 'five records is the maximum and is accepted');
  await v.close();

  const lax = await offline({ verifyDelegationChain: false }, DELEGATED_WINDOW);
  const unchecked = await lax.verify(signJwt(delegatedPayload([r0], { hash: '0'.repeat(64) })));
  t.equal(unchecked.identity.delegationDepth, 1, 'verifyDelegationChain: false still reports depth');
  t.equal(unchecked.identity.chainRoot, A);
  await lax.close();
});
