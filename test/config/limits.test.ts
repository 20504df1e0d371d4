/**
 * Hostile or huge files: parsing runs on the main thread (also on a hot reload), so the work it
 * may take is bounded — by size, by nesting, and by being linear in the file.
 */
import { resolve } from 'node:path';
import t from 'tap';
import { loadPolicies, loadSidecarConfig, resolveSidecarConfig } from '../../src/config/load.js';
import { MAX_FILE_BYTES } from '../../src/config/positions.js';
import { ConfigError, type ConfigProblem } from '../../src/errors.js';

async function policyProblems(files: Record<string, string>): Promise<ConfigProblem[]> {
  const dir = t.testdir(files);
  try {
    await loadPolicies([dir]);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => ({ ...p, file: p.file.slice(dir.length + 1) }));
    throw e;
  }
  return [];
}

/** "version: v1" and comment lines up to exactly `bytes` bytes. */
function paddedPolicy(bytes: number): string {
  const head = 'version: v1\n';
  const line = `#${'x'.repeat(99)}\n`;
  const body = line.repeat(Math.floor((bytes - head.length) / line.length));
  return head + body + '#'.repeat(bytes - head.length - body.length);
}

/** `n` top-level keys `k0: 1`, `k1: 1`, … */
const manyKeys = (n: number) => Array.from({ length: n }, (_, i) => `k${i}: 1\n`).join('');

t.test('a file larger than 256 KiB is refused before it is parsed', async (t) => {
  t.equal(MAX_FILE_BYTES, 256 * 1024);
  t.same(await policyProblems({ 'a.yaml': paddedPolicy(MAX_FILE_BYTES) }), [], 'exactly 256 KiB loads');
  t.same(await policyProblems({ 'a.yaml': paddedPolicy(MAX_FILE_BYTES + 1) }), [
    { file: 'a.yaml', line: 1, col: 1, message: `file is larger than 256 KiB (${MAX_FILE_BYTES + 1} bytes); policies can be split across several files in a directory` },
  ]);
  // 12 MB of "- a": before the limit this blocked for 40 s and took 3.6 GB.
  const list = await policyProblems({ 'list.yaml': '- a\n'.repeat(3_000_000) });
  t.match(list, [{ file: 'list.yaml', line: 1, col: 1, message: /^file is larger than 256 KiB \(12000000 bytes\)/ }]);
  t.equal(list.length, 1);

  const dir = t.testdir({ 'sidecar.yaml': `broker: { url: "http://127.0.0.1:1" }\n${'#'.repeat(MAX_FILE_BYTES)}\n` });
  const e = await loadSidecarConfig(resolve(dir, 'sidecar.yaml'), {}).catch((err: unknown) => err);
  t.ok(e instanceof ConfigError, 'the configuration file too');
  t.match((e as ConfigError).problems, [{ line: 1, col: 1, message: /^file is larger than 256 KiB/ }]);
});

t.test('many keys: the check is linear, well under a second for a file near the limit', async (t) => {
  const dir = t.testdir({ 'warm.yaml': `version: v1\n${manyKeys(1000)}`, 'small.yaml': `version: v1\n${manyKeys(6_000)}`, 'big.yaml': `version: v1\n${manyKeys(24_000)}` });
  // Best of three runs, after a warm-up: the bound is loose, the ratio is what tells linear from quadratic.
  const time = async (name: string, keys: number) => {
    let best = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 3; i++) {
      const start = performance.now();
      const e = await loadPolicies([resolve(dir, name)]).catch((err: unknown) => err);
      best = Math.min(best, performance.now() - start);
      t.ok(e instanceof ConfigError && e.problems.length === keys, `${name}: an unknown key problem per key`);
    }
    return best;
  };
  await time('warm.yaml', 1000);
  const small = await time('small.yaml', 6_000);
  const large = await time('big.yaml', 24_000);
  t.ok(large < 2000, `24,000 keys checked in ${large.toFixed(0)} ms`);
  // Four times the keys: about 4x the time when linear, 16x when quadratic (as it was).
  t.ok(large / small < 10, `4x the keys took ${(large / small).toFixed(1)}x the time (${small.toFixed(0)} ms, ${large.toFixed(0)} ms)`);

  const config = resolve(t.testdir({ 'sidecar.yaml': manyKeys(24_000) }), 'sidecar.yaml');
  const start = performance.now();
  const e = await loadSidecarConfig(config, {}).catch((err: unknown) => err);
  const took = performance.now() - start;
  t.ok(e instanceof ConfigError && e.problems.length === 24_000, 'every unknown key');
  t.ok(took < 2000, `configuration with 24,000 keys checked in ${took.toFixed(0)} ms`);
});

t.test('duplicate keys among many are reported where they are', async (t) => {
  const text = `version: v1\n${manyKeys(20_000)}k7: 2\nroutes:\n  - id: a\n    id: b\n`;
  t.same(await policyProblems({ 'p.yaml': text }), [
    { file: 'p.yaml', line: 20_002, col: 1, message: 'duplicate key "k7": a key may appear once in a mapping; remove or merge the other one' },
    { file: 'p.yaml', line: 20_005, col: 5, message: 'duplicate key "id": a key may appear once in a mapping; remove or merge the other one' },
  ]);
});

t.test('nesting deeper than 64 levels is refused at its position, without a stack overflow', async (t) => {
  const deep = (open: string, close: string, n: number) => `version: v1\nroutes: ${open.repeat(n)}${close.repeat(n)}\n`;
  const cases: Array<[string, string, Array<[number, number]>]> = [
    // The mapping at the top is the first level.
    ['64 levels', deep('[', ']', 63), []],
    ['65 levels', deep('[', ']', 64), [[2, 72]]],
    ['thousands of "["', deep('[', '', 100_000), [[2, 72]]],
    ['flow mappings', deep('{a: ', '}', 5000), [[2, 261]]],
    ['block sequences', `version: v1\nroutes:\n${'- '.repeat(5000)}x\n`, [[3, 127]]],
    ['block mappings', `version: v1\n${Array.from({ length: 70 }, (_, i) => `${' '.repeat(i)}k${i}:\n`).join('')}`, [[66, 65]]],
  ];
  for (const [name, text, want] of cases) {
    const got = await policyProblems({ 'p.yaml': text });
    const nesting = got.filter((p) => /nesting/.test(p.message));
    t.same(
      nesting,
      want.map(([line, col]) => ({ file: 'p.yaml', line, col, message: 'nesting deeper than 64 levels' })),
      name,
    );
    if (want.length > 0) t.equal(got.length, 1, `${name}: the only problem`);
    else t.ok(got.length > 0 && got.every((p) => !/stack/i.test(p.message)), `${name}: schema problems only`);
  }
});

t.test('a huge number of problems does not overflow the stack', async (t) => {
  const policies = Array.from({ length: 200_000 }, () => 1);
  const e = (() => {
    try {
      return resolveSidecarConfig({ broker: { url: 'http://127.0.0.1:1' }, policies }, '/', 'mem.yaml', {});
    } catch (err) {
      return err;
    }
  })();
  t.ok(e instanceof ConfigError, 'a ConfigError, not a RangeError');
  t.equal((e as ConfigError).problems.length, 200_000);
  t.match((e as ConfigError).problems[199_999], { file: 'mem.yaml', line: 1, col: 1, message: 'policies[199999]: expected string, received number' });
});

t.test('aliases: an anchor used many times loads; expansion past the limit is refused at the alias', async (t) => {
  const routes = Array.from(
    { length: 300 },
    (_, i) => `  - { id: r${i}, host: api.example.com, methods: [GET], path: /r${i}, scopes: ["read:x:y"], connector: ${i === 0 ? '&c billing' : '*c'} }\n`,
  ).join('');
  const policy = `version: v1\nconnectors:\n  - { name: billing, type: static, secret: { env: K } }\nroutes:\n${routes}`;
  t.same(await policyProblems({ 'p.yaml': policy }), [], '300 uses of one scalar anchor');

  // Ten levels of ten: 10^10 values once expanded.
  let bomb = 'version: v1\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n';
  for (let i = 1; i <= 9; i++) bomb += `l${i}: &l${i} [${Array(10).fill(`*l${i - 1}`).join(', ')}]\n`;
  const started = performance.now();
  const got = await policyProblems({ 'bomb.yaml': bomb });
  t.ok(performance.now() - started < 1000, 'refused quickly');
  t.equal(got.length, 1);
  t.match(got[0], { file: 'bomb.yaml', message: /^aliases expand the file past 200000 values/ });
  t.ok(got[0].line > 2, `at the alias that goes past it (line ${got[0].line}, col ${got[0].col})`);

  const cyclic = await policyProblems({ 'cyc.yaml': 'version: v1\nroutes: &r\n  - *r\n' });
  t.match(cyclic, [{ message: /expected object/ }], 'an alias inside its own anchor is a schema problem, not a hang');
});
