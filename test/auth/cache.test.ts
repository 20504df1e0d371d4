import { createHash } from 'node:crypto';
import t from 'tap';
import { TokenCache } from '../../src/auth/cache.js';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import type { SidecarError } from '../../src/errors.js';
import { agentToken, brokerConfig, writeKeyFiles } from './helpers.js';

const digest = (s: string) => createHash('sha256').update(s).digest('binary');
/** Digests that all land on the same table position (equal first word), to exercise probing. */
const colliding = (i: number) => `SAME${String(i).padStart(28, '.')}`;
/** Digests homed on the last two table positions (first word ends in binary 1…1), so probe runs wrap. */
const wrapping = (i: number) => `${i % 2 ? '\xff' : '\xfe'}\xff\xff\xff${String(i).padStart(28, '.')}`;

t.test('TokenCache: LRU order, bound, replace, prune', async (t) => {
  const c = new TokenCache<string>(3);
  c.set(digest('a'), 'A', 100, 0);
  c.set(digest('b'), 'B', 200, 0);
  c.set(digest('c'), 'C', 300, 0);
  t.equal(c.size, 3);
  t.not(c.lookup(digest('a')), -1, 'touch a: b is now least recently used');
  c.set(digest('d'), 'D', 400, 0);
  t.equal(c.size, 3, 'bounded');
  t.equal(c.lookup(digest('b')), -1, 'b evicted');
  t.equal(c.value(c.lookup(digest('a'))), 'A');
  c.set(digest('c'), 'C2', 350, 7);
  const slot = c.lookup(digest('c'));
  t.equal(c.value(slot), 'C2', 'replaced in place');
  t.equal(c.deadline(slot), 350);
  t.equal(c.checkedAt(slot), 7);
  t.equal(c.size, 3);
  t.equal(c.prune(360), 2, 'a (100) and c (350) are dead at 360');
  t.same(['a', 'b', 'c', 'd'].map((k) => c.lookup(digest(k)) !== -1), [false, false, false, true]);
  c.delete(digest('d'));
  t.equal(c.size, 0);
  c.set(digest('e'), 'E', 1, 0);
  c.clear();
  t.equal(c.size, 0);
  t.throws(() => new TokenCache(0), RangeError);
  t.throws(() => c.lookup('short'), RangeError, 'keys are digests, never tokens');
});

t.test('TokenCache grows past its initial capacity up to the bound', async (t) => {
  const c = new TokenCache<number>(1000);
  for (let i = 0; i < 1500; i++) c.set(digest(`k${i}`), i, i, 0);
  t.equal(c.size, 1000);
  t.equal(c.lookup(digest('k499')), -1, 'oldest evicted');
  t.equal(c.value(c.lookup(digest('k500'))), 500);
  t.equal(c.value(c.lookup(digest('k1499'))), 1499);
  t.equal(c.prune(1000), 501, 'entries whose deadline is at or before now are pruned');
  t.equal(c.size, 499);
});

t.test('TokenCache matches a reference LRU under random operations, colliding and wrapping keys included', async (t) => {
  for (const max of [50, 700]) {
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const c = new TokenCache<number>(max);
    const model = new Map<string, number>();
    const keys = Array.from({ length: max * 3 }, (_, i) => [colliding, wrapping, (n: number) => digest(`key${n}`)][i % 3](i));
    let mismatches = 0;
    for (let step = 0; step < 20_000; step++) {
      const k = keys[rand(keys.length)];
      const op = rand(10);
      if (op < 5) {
        const slot = c.lookup(k);
        const want = model.get(k);
        if (want !== undefined) {
          model.delete(k);
          model.set(k, want);
        }
        if ((slot === -1 ? undefined : c.value(slot)) !== want) mismatches++;
      } else if (op < 9) {
        c.set(k, step, 0, 0);
        model.delete(k);
        model.set(k, step);
        if (model.size > max) model.delete(model.keys().next().value as string);
      } else {
        c.delete(k);
        model.delete(k);
      }
      if (c.size !== model.size) mismatches++;
    }
    t.equal(mismatches, 0, `max ${max}: same answers and sizes as a Map-based LRU over 20k operations`);
    t.ok([...model].every(([k, v]) => c.value(c.lookup(k)) === v), `max ${max}: every surviving entry found`);
  }
});

t.test('verifier cache: bounded, keyed by digest, entries die at exp', async (t) => {
  const files = writeKeyFiles(t.testdir({}));
  let now = 1_800_000_000_000;
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: files.spki, cacheSize: 3 }), { now: () => now });
  t.teardown(() => v.close());
  const tokens = [0, 1, 2, 3, 4].map((i) => agentToken({ exp: 1_800_000_010 + i * 10, iat: 1_799_999_990 }));
  for (const tok of tokens) t.equal((await v.verify(tok)).source, 'offline');
  t.equal(v.cacheSize(), 3, 'never more than cacheSize');
  t.equal((await v.verify(tokens[4])).source, 'cache', 'recent token cached');
  t.equal((await v.verify(tokens[0])).source, 'offline', 'least recently used token was evicted');

  now = 1_800_000_031_000; // past tokens[0] (exp ...010) and tokens[1..2] (...020, ...030)
  t.equal(((await v.verify(tokens[0]).catch((e) => e)) as SidecarError).code, 'token_expired', 'a cached token dies at exp');
  t.equal(v.cacheSize(), 2, 'expired entries are pruned');
  now = 1_800_000_040_999;
  t.equal((await v.verify(tokens[3])).source, 'cache', 'valid through its exp second');
  now = 1_800_000_041_000;
  t.equal(((await v.verify(tokens[3]).catch((e) => e)) as SidecarError).code, 'token_expired');
  t.equal(v.cacheSize(), 1);
});

t.test('verifier cache with leeway keeps entries for the leeway', async (t) => {
  const files = writeKeyFiles(t.testdir({}));
  let now = 1_800_000_000_000;
  const v = await createTokenVerifier(brokerConfig({ verify: 'offline', publicKeyFile: files.spki, leeway: '5s' }), { now: () => now });
  t.teardown(() => v.close());
  const tok = agentToken({ exp: 1_800_000_010, iat: 1_799_999_990 });
  await v.verify(tok);
  now = 1_800_000_015_999;
  t.equal((await v.verify(tok)).source, 'cache');
  now = 1_800_000_016_000;
  t.equal(((await v.verify(tok).catch((e) => e)) as SidecarError).code, 'token_expired');
});
