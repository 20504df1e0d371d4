/**
 * Building blocks whose exact behaviour is part of the wire contract: Go-style JSON decoding,
 * audit detail redaction, RFC 3339 handling, path cleaning, rate-limit buckets.
 */
import t from 'tap';
import { redactDetail, verifyAuditChain } from '../../src/broker/audit.js';
import { bool, decodeStruct, int, str, strings } from '../../src/broker/gojson.js';
import { parseFirstValue, parseOnlyValue } from '../../src/broker/jsonparse.js';
import { RateLimiter } from '../../src/broker/ratelimit.js';
import { cleanPath } from '../../src/broker/router.js';
import { parseRfc3339, rfc3339Nano, rfc3339Seconds } from '../../src/broker/timefmt.js';
import { clientIdPrefix } from '../../src/broker/handlers/apps.js';

const spec = { secret: str, ttl: int, single_use: bool, scope: strings };
const dec = (text: string) => decodeStruct(parseFirstValue(text), spec);

t.test('Go-style JSON decoding', async (t) => {
  t.same(dec('{"secret":"a","unknown":{"x":[1]}}'), { secret: 'a' }, 'unknown members ignored');
  t.same(dec('{"SeCrEt":"a"}'), { secret: 'a' }, 'keys match case-insensitively');
  t.same(dec('{"secret":"a","secret":"b"}'), { secret: 'b' }, 'the last duplicate wins');
  t.same(dec('{"secret":"a"} {not json'), { secret: 'a' }, 'trailing data ignored');
  t.same(dec('null'), {}, 'null decodes to an empty struct');
  t.same(dec('{"secret":null,"ttl":null,"scope":null}'), {}, 'null leaves fields unset');
  t.same(dec('{"secret":"a","secret":null,"ttl":5,"ttl":null}'), { secret: 'a', ttl: 5 }, 'null into a string or int changes nothing, an earlier value stays');
  t.same(dec('{"scope":["a"],"scope":null}'), {}, 'null into a slice sets it to nil');
  t.same(dec('{"\u017fecret":"a"}'), { secret: 'a' }, 'Go folds ſ to s when matching names');
  t.same(dec('{"scope":["a",null]}'), { scope: ['a', ''] }, 'null slice elements are zero values');
  t.same(dec('{"ttl":-12,"single_use":false}'), { ttl: -12, single_use: false });
  for (const bad of ['{"ttl":1.5}', '{"ttl":1e2}', '{"ttl":"5"}', '{"ttl":9223372036854775808}', '{"secret":5}', '{"scope":"a"}', '{"scope":[1]}', '{"single_use":"true"}', '[]', '"x"']) {
    t.throws(() => dec(bad), bad);
  }
  for (const bad of ['', '   ', '{', '{"a":}', '{"a" 1}', "{'a':1}", '{"a":1,}', '{"a":"\u0001"}', '{"a":"\\x"}', '{"a":01}', '\ufeff{}']) {
    t.throws(() => parseFirstValue(bad), JSON.stringify(bad));
  }
  t.equal(dec('{"ttl":9223372036854775807}').ttl, Number(2n ** 63n - 1n), 'int64 max is accepted');
  t.equal(parseFirstValue('"\\ud83d\\ude00 \\ud800x \\udc00"'), '\u{1F600} \ufffdx \ufffd', 'surrogate pairs joined, lone halves replaced');
  t.equal(parseFirstValue('"\\u003c\\/\\n"'), '</\n');
  t.throws(() => parseOnlyValue('{} x'), 'Unmarshal semantics reject trailing data');
  t.same(parseOnlyValue(' {} \n'), parseFirstValue('{}'));
});

t.test('audit detail redaction (before hashing)', async (t) => {
  t.equal(redactDetail('client_secret=abc123'), 'client_secret=***REDACTED***');
  t.equal(redactDetail('Password: hunter2 and more'), 'Password: ***REDACTED***');
  t.equal(redactDetail('private_key=k token=t'), 'private_key=***REDACTED***');
  t.equal(redactDetail('name=secret-agent'), 'name=secret-agent', 'the word after the separator does not trigger');
  t.equal(redactDetail('token issued jti=abc'), 'token issued jti=abc');
  t.equal(redactDetail('mentions a secret but has no separator'), 'mentions a secret but has no separator');
});

t.test('audit chain verification detects edits', async (t) => {
  const { buildEvent, AUDIT_GENESIS } = await import('../../src/broker/audit.js');
  const e1 = buildEvent(AUDIT_GENESIS, 'evt-000001', '2030-01-01T00:00:00Z', { event_type: 'a', detail: 'x' });
  const e2 = buildEvent(e1.hash, 'evt-000002', '2030-01-01T00:00:01Z', { event_type: 'b', detail: 'y', deleg_depth: 2 });
  t.same(verifyAuditChain([e1, e2]), { ok: true, count: 2 });
  t.match(verifyAuditChain([{ ...e1, detail: 'z' }, e2]), { ok: false, index: 0, reason: /hash/ });
  t.match(verifyAuditChain([e2]), { ok: false, index: 0, reason: /prev_hash/ });
});

t.test('RFC 3339', async (t) => {
  t.equal(rfc3339Nano(Date.UTC(2030, 0, 2, 3, 4, 5, 600)), '2030-01-02T03:04:05.6Z');
  t.equal(rfc3339Nano(Date.UTC(2030, 0, 2, 3, 4, 5)), '2030-01-02T03:04:05Z');
  t.equal(rfc3339Nano(Date.UTC(2030, 0, 2, 3, 4, 5, 1) + 0.25), '2030-01-02T03:04:05.00125Z');
  t.equal(rfc3339Seconds(Date.UTC(2030, 0, 2, 3, 4, 5, 999)), '2030-01-02T03:04:05Z');
  t.equal(parseRfc3339('2030-01-02T03:04:05.000000001Z'), BigInt(Date.UTC(2030, 0, 2, 3, 4, 5)) * 1_000_000n + 1n);
  t.equal(parseRfc3339('2030-01-02T04:04:05+01:00'), BigInt(Date.UTC(2030, 0, 2, 3, 4, 5)) * 1_000_000n);
  for (const bad of ['2030-02-30T00:00:00Z', '2031-02-29T00:00:00Z', '2030-01-01 00:00:00Z', '2030-01-01T24:00:00Z', '2030-01-01T00:00:00', 'now']) {
    t.equal(parseRfc3339(bad), undefined, bad);
  }
  t.ok(parseRfc3339('2028-02-29T00:00:00Z'), 'leap day');
});

t.test('path cleaning like Go', async (t) => {
  t.equal(cleanPath('/v1/health'), '/v1/health');
  t.equal(cleanPath('/v1//health'), '/v1/health');
  t.equal(cleanPath('/v1/./x/../health'), '/v1/health');
  t.equal(cleanPath('/v1/health/'), '/v1/health/');
  t.equal(cleanPath('/..'), '/');
  t.equal(cleanPath(''), '/');
});

t.test('token buckets start full and refill', async (t) => {
  let now = 0;
  const rl = new RateLimiter(2, 3, () => now);
  t.same([rl.allow('k'), rl.allow('k'), rl.allow('k'), rl.allow('k')], [true, true, true, false]);
  t.ok(rl.allow('other'));
  now += 499;
  t.notOk(rl.allow('k'));
  now += 1;
  t.ok(rl.allow('k'), 'one token after 1/rate seconds');
});

t.test('client id prefixes', async (t) => {
  t.equal(clientIdPrefix('billing-bot'), 'bb');
  t.equal(clientIdPrefix('medassist-demo-app-x'), 'mda');
  t.equal(clientIdPrefix('weather'), 'wea');
  t.equal(clientIdPrefix('ab'), 'ab');
});

t.test('rate limiter: keys a caller makes up cost bounded memory', async (t) => {
  const { RateLimiter } = await import('../../src/broker/ratelimit.js');
  let now = 0;
  const rl = new RateLimiter(10 / 60, 3, () => now);
  const long = 'k'.repeat(10_000);
  t.ok(rl.allow(long) && rl.allow(long) && rl.allow(long), 'a long key has its burst');
  t.notOk(rl.allow(long), 'and is limited like any other: kept as its hash');
  t.notOk(rl.allow(`${long}`), 'the same long key is the same bucket');
  for (let i = 0; i < 120_000; i++) {
    now += 1;
    rl.allow(`id-${i}`);
  }
  t.ok(rl.size() <= 50_000, `at most 50,000 keys kept (${rl.size()})`);
  t.notOk(rl.allow('id-119999') && rl.allow('id-119999') && rl.allow('id-119999'), 'recent keys keep their buckets');
});
