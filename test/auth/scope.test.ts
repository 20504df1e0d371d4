import t from 'tap';
import { firstUncovered, parseScope, scopeCovers, scopeIsSubset } from '../../src/auth/scope.js';

t.test('parse: split on the first two colons, all three parts non-empty', async (t) => {
  const cases: [string, [string, string, string] | undefined][] = [
    ['read:data:x', ['read', 'data', 'x']],
    ['read:data:a:b', ['read', 'data', 'a:b']],
    ['read:data:a:b:c', ['read', 'data', 'a:b:c']],
    ['read:data:*', ['read', 'data', '*']],
    ['*:*:*', ['*', '*', '*']],
    ['read:data::', ['read', 'data', ':']],
    ['READ:Data:X', ['READ', 'Data', 'X']],
    [' read:data:x ', [' read', 'data', 'x ']],
    ['read:data', undefined],
    ['read', undefined],
    ['', undefined],
    [':data:x', undefined],
    ['read::x', undefined],
    ['read:data:', undefined],
    ['::', undefined],
    [':::', undefined],
  ];
  for (const [input, want] of cases) {
    const got = parseScope(input);
    t.same(got && [got.action, got.resource, got.identifier], want, JSON.stringify(input));
  }
  t.equal(parseScope(42 as unknown as string), undefined, 'non-string');
});

t.test('coverage of requested R by allowed A (reference §6)', async (t) => {
  const cases: [allowed: string, requested: string, covers: boolean, why: string][] = [
    ['read:data:x', 'read:data:x', true, 'identical'],
    ['read:data:*', 'read:data:x', true, 'identifier wildcard'],
    ['read:data:*', 'read:data:a:b', true, 'wildcard covers an identifier with colons'],
    ['read:data:*', 'read:data:*', true, 'wildcard to wildcard'],
    ['read:data:x', 'read:data:*', false, 'a concrete grant does not cover a wildcard request'],
    ['read:data:x', 'read:data:y', false, 'different identifier'],
    ['read:data:x', 'write:data:x', false, 'action differs'],
    ['write:data:x', 'read:data:x', false, 'write does not imply read'],
    ['read:data:x', 'read:other:x', false, 'resource differs'],
    ['read:data:x', 'READ:data:x', false, 'byte-exact action, no case folding'],
    ['read:data:x', 'read:data:X', false, 'byte-exact identifier'],
    ['read:data:x', 'read:data:x ', false, 'no trimming'],
    ['*:*:*', 'read:data:x', false, '*:*:* is not a super-scope'],
    ['*:*:*', '*:*:anything', true, '*:*:* covers only the literal *:* action/resource'],
    ['*:data:x', 'read:data:x', false, '* is literal in the action'],
    ['read:*:x', 'read:data:x', false, '* is literal in the resource'],
    ['read:*:x', 'read:*:x', true, 'literal * resource matches itself'],
    ['read:*:*', 'read:data:x', false, 'identifier wildcard does not make the resource wild'],
    ['read:data:cust-*', 'read:data:cust-1', false, 'no prefix glob'],
    ['read:data:cust-*', 'read:data:cust-*', true, 'a glob-looking identifier is literal'],
    ['read:data:**', 'read:data:x', false, 'only exactly one asterisk is a wildcard'],
    ['read:data: *', 'read:data:x', false, 'asterisk with a space is literal'],
    ['read:data:a:b', 'read:data:a:b', true, 'colon in identifier, exact'],
    ['read:data:a:*', 'read:data:a:b', false, 'wildcard only as the whole identifier'],
    ['read:data:a', 'read:data:a:b', false, 'no hierarchy through colons'],
    ['read:data', 'read:data:x', false, 'invalid allowed never covers'],
    ['read:data:*', 'read:data', false, 'invalid requested never covered'],
    ['read:data:*', 'read:data:', false, 'empty identifier is invalid'],
    [':data:*', ':data:x', false, 'empty action is invalid even when equal'],
    ['read::*', 'read::x', false, 'empty resource is invalid even when equal'],
    ['', '', false, 'empty strings'],
  ];
  for (const [allowed, requested, covers, why] of cases) {
    t.equal(scopeCovers(allowed, requested), covers, `${allowed} ⊇ ${requested}: ${why}`);
  }
});

t.test('set check: every requested covered by some allowed', async (t) => {
  t.equal(scopeIsSubset([], []), true, 'empty requested is vacuously true');
  t.equal(scopeIsSubset([], ['read:data:x']), true, 'empty requested, non-empty allowed');
  t.equal(scopeIsSubset(['read:data:x'], []), false, 'nothing allowed');
  t.equal(scopeIsSubset(['read:data:x', 'write:data:y'], ['read:data:x', 'write:data:y']), true, 'equal sets (non-strict)');
  t.equal(scopeIsSubset(['read:data:x', 'read:data:y'], ['read:data:*']), true, 'one wildcard covers several');
  t.equal(scopeIsSubset(['read:data:x', 'write:data:x'], ['read:data:*']), false, 'one uncovered element fails all');
  t.equal(scopeIsSubset(['read:data:x'], ['*:*:*']), false, '*:*:* grants nothing else');
  t.equal(scopeIsSubset(['read:data:x'], ['bogus', 'read:data:x']), true, 'an invalid allowed entry is skipped');
  t.equal(scopeIsSubset(['bogus'], ['read:data:*', '*:*:*']), false, 'an invalid requested entry is never covered');
  t.equal(scopeIsSubset(['read:data:x', 'read:data:x'], ['read:data:x']), true, 'duplicates');
});

t.test('firstUncovered names the first missing scope', async (t) => {
  t.equal(firstUncovered(['read:data:x', 'write:data:x', 'del:data:x'], ['read:data:*']), 'write:data:x');
  t.equal(firstUncovered(['read:data:x'], ['read:data:*']), undefined);
  t.equal(firstUncovered([], []), undefined);
});
