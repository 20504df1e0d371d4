/**
 * Compatibility evidence: every reference §13 test vector reproduced from the same inputs through
 * the broker's own signing, encoding and hashing code.
 */
import t from 'tap';
import { auditHash, buildEvent } from '../../src/broker/audit.js';
import { chainHash, chainJson, delegationMessage, signDelegationRecord } from '../../src/broker/delegation.js';
import { goJson } from '../../src/broker/gojson.js';
import { claimsJson, encodeJwt, headerJson, verifyJwt } from '../../src/broker/jwt.js';
import { privateKeyFromSeed, signingKeyFrom } from '../../src/broker/keys.js';
import { rfc3339NanoParts } from '../../src/broker/timefmt.js';
import { newClaims } from '../../src/broker/tokens.js';

const key = signingKeyFrom(privateKeyFromSeed(Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex')));
const AGENT = 'spiffe://agentwrit.local/agent/orch-1/task-1/0123456789abcdef';
const SCOPE = ['read:data:*', 'write:data:*'];
const RECORD_SIG =
  'cdf54dc1ea38380eb68d2142b3487d2e0ec38d950ce43124d08f27643c50b646e7b7d85d11660e0fe76d6e318c1d6ecf2e18205597d49a2b2948ee25b68c0b00';

t.test('RFC 8032 test-1 key and its RFC 7638 kid', async (t) => {
  t.equal(key.publicRaw.toString('hex'), 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
  t.equal(key.kid, 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k');
  t.equal(headerJson(key.kid), '{"alg":"EdDSA","typ":"JWT","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}');
  t.same(key.jwk, { kty: 'OKP', crv: 'Ed25519', x: key.publicRaw.toString('base64url'), kid: key.kid, alg: 'EdDSA', use: 'sig' });
});

t.test('agent token: payload bytes and the full compact token', async (t) => {
  const claims = newClaims({
    issuer: '',
    sub: AGENT,
    scope: SCOPE,
    ttl: 300,
    iat: 1800000000,
    jti: '00112233445566778899aabbccddeeff',
    taskId: 'task-1',
    orchId: 'orch-1',
  });
  t.equal(
    goJson(claimsJson(claims)),
    '{"iss":"","sub":"spiffe://agentwrit.local/agent/orch-1/task-1/0123456789abcdef","exp":1800000300,"nbf":1800000000,"iat":1800000000,"jti":"00112233445566778899aabbccddeeff","scope":["read:data:*","write:data:*"],"task_id":"task-1","orch_id":"orch-1"}',
  );
  const token = encodeJwt(claims, key);
  t.equal(
    token,
    'eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhIQ1R3WEJ5Z3JTNGsifQ.eyJpc3MiOiIiLCJzdWIiOiJzcGlmZmU6Ly9hZ2VudHdyaXQubG9jYWwvYWdlbnQvb3JjaC0xL3Rhc2stMS8wMTIzNDU2Nzg5YWJjZGVmIiwiZXhwIjoxODAwMDAwMzAwLCJuYmYiOjE4MDAwMDAwMDAsImlhdCI6MTgwMDAwMDAwMCwianRpIjoiMDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmYiLCJzY29wZSI6WyJyZWFkOmRhdGE6KiIsIndyaXRlOmRhdGE6KiJdLCJ0YXNrX2lkIjoidGFzay0xIiwib3JjaF9pZCI6Im9yY2gtMSJ9.Jx1aIwn1WGkXQSpoDqYNtZ5xeCewvYtebnUImzEWkfYTinIta-NT56DiBrUr7fGkEexoRb5oXusF7WUa-A4fDw',
  );
  // And the broker's own verification accepts it within its lifetime, with no leeway at either end.
  t.ok(verifyJwt(token, key, 1800000300, '').ok, 'valid at now == exp');
  t.same(verifyJwt(token, key, 1800000301, ''), { ok: false, reason: 'token expired' });
  t.same(verifyJwt(token, key, 1799999999, ''), { ok: false, reason: 'token not yet valid' });
  t.same(verifyJwt(token, key, 1800000000, 'other-issuer'), { ok: false, reason: 'issuer mismatch' });
});

t.test('delegation record: message, signature, chain hash, delegated token', async (t) => {
  const delegatedAt = rfc3339NanoParts(Date.UTC(2027, 0, 15, 12, 0, 0) / 1000, 123456780);
  t.equal(delegatedAt, '2027-01-15T12:00:00.12345678Z', 'trailing zero of the nanoseconds trimmed');
  t.equal(delegationMessage(AGENT, SCOPE, delegatedAt), `${AGENT}|read:data:*,write:data:*|2027-01-15T12:00:00.12345678Z`);
  const record = signDelegationRecord(key, AGENT, SCOPE, delegatedAt);
  t.equal(record.signature, RECORD_SIG);
  t.equal(
    chainJson([record]),
    `[{"agent":"${AGENT}","scope":["read:data:*","write:data:*"],"delegated_at":"2027-01-15T12:00:00.12345678Z","signature":"${RECORD_SIG}"}]`,
  );
  const hash = chainHash([record]);
  t.equal(hash, '9a2cf7f3b1a83c596e898c4b567f12d5d3936fa78673e3f809eaa7f234274b24');

  const delegated = newClaims({
    issuer: '',
    sub: 'spiffe://agentwrit.local/agent/orch-1/task-2/fedcba9876543210',
    scope: ['read:data:customers'],
    ttl: 60,
    iat: 1800000000,
    jti: 'ffeeddccbbaa99887766554433221100',
    taskId: 'task-1',
    orchId: 'orch-1',
    chain: [record],
    chainHash: hash,
  });
  const token = encodeJwt(delegated, key);
  t.equal(token.split('.')[2], 'BRCRHfWYKtea6eMI7jE7lEO5KhYoLdosPxP1KYK1FZcyAuS76aw_Avm63b6AJzsT1ysZ4d4rd6iS9pk1mOxwAQ');
  const payload = Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8');
  const raw = payload.slice(payload.indexOf('"delegation_chain":') + '"delegation_chain":'.length, payload.indexOf(',"chain_hash"'));
  t.equal(raw, chainJson([record]), 'chain_hash covers the raw chain text inside the payload');
});

t.test('Go HTML-safe escaping', async (t) => {
  t.equal(goJson(['read:data:a<b>&c', 'x\u2028y']), '["read:data:a\\u003cb\\u003e\\u0026c","x\\u2028y"]');
  t.equal(goJson(['p\u2029q', 'tab\tnl\nbs\bff\fcr\r\u0001']), '["p\\u2029q","tab\\tnl\\nbs\\bff\\fcr\\r\\u0001"]');
  t.equal(goJson(['lone\ud800']), '["lone\ufffd"]', 'invalid UTF-16 becomes U+FFFD as Go writes invalid UTF-8');
});

t.test('audit hash from the given preimage fields', async (t) => {
  const fields = {
    prev_hash: '0'.repeat(64),
    id: 'evt-000001',
    timestamp: '2027-01-15T12:00:01.5Z',
    event_type: 'agent_registered',
    agent_id: AGENT,
    task_id: 'task-1',
    orch_id: 'orch-1',
    detail: 'Agent registered with scope [read:data:* write:data:*]',
    outcome: 'success',
  };
  t.equal(auditHash(fields), '02d769c4387062191b4fb3070e9ca5e4c261fdb4a5b7ba8bd3ab515ba664b114');
  // Through the event builder the log uses: same hash, wire key order, empty members omitted.
  const e = buildEvent(fields.prev_hash, fields.id, fields.timestamp, { ...fields, outcome: 'success' });
  t.equal(e.hash, '02d769c4387062191b4fb3070e9ca5e4c261fdb4a5b7ba8bd3ab515ba664b114');
  t.same(Object.keys(e), ['id', 'timestamp', 'event_type', 'agent_id', 'task_id', 'orch_id', 'detail', 'outcome', 'hash', 'prev_hash']);
  t.equal(rfc3339NanoParts(Date.UTC(2027, 0, 15, 12, 0, 1) / 1000, 500_000_000), '2027-01-15T12:00:01.5Z');
});
