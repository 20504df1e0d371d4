import { rename, symlink, unlink } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import t from 'tap';
import { loadPolicies } from '../../src/config/load.js';
import { ConfigError, type ConfigProblem } from '../../src/errors.js';

const route = (id: string) => `version: v1\nroutes:\n  - id: ${id}\n    host: h.example\n    path: /${id}\n    scopes: ["r:s:x"]\n`;

async function problemsOf(paths: string[]): Promise<ConfigProblem[]> {
  try {
    await loadPolicies(paths);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

t.test('a directory: *.yaml and *.yml directly inside, sorted, dot files skipped', async (t) => {
  const dir = t.testdir({
    'b.yml': route('b'),
    'a.yaml': route('a'),
    '.hidden.yaml': 'not: [valid',
    'notes.txt': 'ignored',
    'README.md': 'ignored',
    sub: { 'c.yaml': route('c') },
  });
  const loaded = await loadPolicies([dir]);
  t.same(
    loaded.sources.map((s) => basename(s.file)),
    ['a.yaml', 'b.yml'],
  );
  t.equal(loaded.sources[0].file, resolve(dir, 'a.yaml'));
  t.equal(loaded.sources[0].policy.routes[0].id, 'a');
  t.same(loaded.sources[0].positions.value(['routes', 0, 'path']), { line: 5, col: 11 });
  t.match(loaded.digest, /^[0-9a-f]{64}$/);
  const withFile = await loadPolicies([dir, resolve(dir, 'sub/c.yaml'), resolve(dir, 'a.yaml')]);
  t.same(
    withFile.sources.map((s) => basename(s.file)),
    ['a.yaml', 'b.yml', 'c.yaml'],
    'files and directories mix; a file listed twice is loaded once',
  );
});

t.test('Kubernetes ConfigMap layout: symlinks through ..data, swapped atomically', async (t) => {
  const dir = t.testdir({
    '..2024_01_01': { 'billing.yaml': route('v1') },
    '..2024_01_02': { 'billing.yaml': route('v2') },
    '..data': t.fixture('symlink', '..2024_01_01'),
    'billing.yaml': t.fixture('symlink', '..data/billing.yaml'),
  });
  const first = await loadPolicies([dir]);
  t.same(
    first.sources.map((s) => [basename(s.file), s.policy.routes[0].id]),
    [['billing.yaml', 'v1']],
  );
  // The kubelet swaps ..data with a rename of a fresh symlink.
  await symlink('..2024_01_02', resolve(dir, '..data_tmp'));
  await rename(resolve(dir, '..data_tmp'), resolve(dir, '..data'));
  const second = await loadPolicies([dir]);
  t.equal(second.sources[0].policy.routes[0].id, 'v2');
  t.not(second.digest, first.digest);
});

t.test('dangling symlinks are not policy files', async (t) => {
  const dir = t.testdir({ 'a.yaml': route('a'), 'gone.yaml': t.fixture('symlink', 'nowhere.yaml') });
  t.same(
    (await loadPolicies([dir])).sources.map((s) => basename(s.file)),
    ['a.yaml'],
  );
  await unlink(resolve(dir, 'gone.yaml'));
});

t.test('problems of every file, with positions; missing paths and empty directories', async (t) => {
  const dir = t.testdir({
    pol: {
      'a.yaml': 'version: v2\nroutes: []\n',
      'b.yaml': 'version: v1\nroutes:\n  - id: x\n    host: h\n    path: /x\n    scopes: ["r:s:x"]\n    conector: k\n',
      'c.yaml': 'version: v1\nconnectors:\n  - name: k\n    type: static\n    secret: { environment: K }\n',
      'd.yaml': 'version: v1\nroutes:\n  - id: y\n    host: h\n    path: /y\n',
      'e.yaml': '',
      'f.yaml': 'version: v1\nroutes: [\n',
      'g.yaml': 'version: v1\nroutes:\n  - id: z\n    host: h\n    path: /z\n    methods: [GET, FETCH]\n    scopes: ["r:s:x"]\n',
    },
    empty: {},
  });
  const got = await problemsOf([resolve(dir, 'pol'), resolve(dir, 'empty'), resolve(dir, 'missing.yaml')]);
  const rel = got.map((p) => `${p.file.slice(dir.length + 1)}:${p.line}:${p.col} ${p.message}`);
  t.match(rel, [
    /^empty:1:1 directory holds no \*\.yaml or \*\.yml policy file$/,
    /^missing\.yaml:1:1 no such file or directory$/,
    /^pol\/a\.yaml:1:10 version: expected "v1"$/,
    /^pol\/b\.yaml:7:5 routes\[0\]: unknown key "conector" \(did you mean "connector"\?\)$/,
    /^pol\/c\.yaml:5:13 connectors\[0\]\.secret: missing required key "env"$/,
    /^pol\/c\.yaml:5:15 connectors\[0\]\.secret: unknown key "environment" \(known keys: env, file\)$/,
    /^pol\/d\.yaml:3:5 routes\[0\]: missing required key "scopes"$/,
    /^pol\/e\.yaml:1:1 empty policy file/,
    /^pol\/f\.yaml:\d+:\d+ /,
    /^pol\/g\.yaml:6:20 routes\[0\]\.methods\[1\]: Invalid option/,
  ]);
  t.equal(rel.length, 10);
});

t.test('digest: over names and contents, independent of directory and order', async (t) => {
  // One testdir per test: the four sets live in subdirectories.
  const dir = t.testdir({
    one: { 'a.yaml': route('a'), 'b.yaml': route('b') },
    two: { 'b.yaml': route('b'), 'a.yaml': route('a') },
    renamed: { 'a.yaml': route('a'), 'c.yaml': route('b') },
    edited: { 'a.yaml': route('a'), 'b.yaml': `${route('b')}# comment\n` },
  });
  const [one, two, renamed, edited] = ['one', 'two', 'renamed', 'edited'].map((d) => resolve(dir, d));
  const d1 = (await loadPolicies([one])).digest;
  t.equal((await loadPolicies([two])).digest, d1);
  t.equal((await loadPolicies([resolve(one, 'b.yaml'), resolve(one, 'a.yaml')])).digest, d1);
  t.not((await loadPolicies([renamed])).digest, d1);
  t.not((await loadPolicies([edited])).digest, d1);
});
