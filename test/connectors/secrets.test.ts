import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createSecretReader, explainFailure, SECRET_RECHECK_MS } from '../../src/connectors/secrets.js';
import { SidecarError } from '../../src/errors.js';
import { fileIdentity } from '../../src/file-identity.js';

const dir = await mkdtemp(join(tmpdir(), 'aw-secrets-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

/** Reads until the value changes, returning it and how long that took. */
async function readUntilChanged(read: () => Promise<string>, from: string, ms = SECRET_RECHECK_MS * 3) {
  const start = Date.now();
  for (;;) {
    const v = await read();
    if (v !== from) return { value: v, after: Date.now() - start };
    if (Date.now() - start > ms) throw new Error('the value never changed');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function rejectsUnavailable(t: Test, p: Promise<unknown>, operatorMessage: RegExp, secret?: string) {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  t.ok(e instanceof SidecarError, 'a SidecarError');
  const err = e as SidecarError;
  t.equal(err.code, 'connector_unavailable');
  t.equal(err.detail, 'the upstream credential is unavailable', 'the agent learns nothing about the config');
  t.match(explainFailure(err), operatorMessage);
  if (secret) t.notOk(`${err.message} ${explainFailure(err)}`.includes(secret), 'the value is never in the error');
}

t.test('env: read once, never shown by describe()', async (t) => {
  const env = { BILLING_API_KEY: 'sk-live-123' };
  const r = createSecretReader({ env: 'BILLING_API_KEY' }, dir, env);
  t.equal(await r.read(), 'sk-live-123');
  t.equal(r.describe(), 'env BILLING_API_KEY');
  env.BILLING_API_KEY = 'changed';
  t.equal(await r.read(), 'sk-live-123', 'the environment of a running process is fixed');
});

t.test('env: missing or empty is connector_unavailable naming the variable', async (t) => {
  await rejectsUnavailable(t, createSecretReader({ env: 'NOPE' }, dir, {}).read(), /environment variable NOPE is not set, empty or only whitespace/);
  await rejectsUnavailable(t, createSecretReader({ env: 'EMPTY' }, dir, { EMPTY: '' }).read(), /EMPTY is not set, empty or only whitespace/);
});

t.test('file: relative to baseDir, one trailing newline removed', async (t) => {
  const cases: [string, string][] = [
    ['plain', 'plain'],
    ['lf\n', 'lf'],
    ['crlf\r\n', 'crlf'],
    ['two\n\n', 'two\n'],
    [' spaced ', ' spaced '],
  ];
  for (const [i, [content, want]] of cases.entries()) {
    await writeFile(join(dir, `s${i}`), content);
    const r = createSecretReader({ file: `s${i}` }, dir);
    t.equal(await r.read(), want, JSON.stringify(content));
    t.equal(r.describe(), `file ${join(dir, `s${i}`)}`);
  }
});

t.test('file: missing, empty, or a directory is connector_unavailable', async (t) => {
  await rejectsUnavailable(t, createSecretReader({ file: 'missing' }, dir).read(), /secret file .*missing cannot be read \(ENOENT\)/);
  await writeFile(join(dir, 'empty'), '\n');
  await rejectsUnavailable(t, createSecretReader({ file: 'empty' }, dir).read(), /empty/);
  await rejectsUnavailable(t, createSecretReader({ file: '.' }, dir).read(), /EISDIR/);
  await writeFile(join(dir, 'blank'), ' \t \n');
  await rejectsUnavailable(t, createSecretReader({ file: 'blank' }, dir).read(), /holds only whitespace/);
  await rejectsUnavailable(t, createSecretReader({ env: 'BLANK' }, dir, { BLANK: '  ' }).read(), /BLANK is not set, empty or only whitespace/);
});

t.test('file: larger than a Kubernetes Secret can be (1 MiB) is refused without being read whole', async (t) => {
  await writeFile(join(dir, 'max'), 'k'.repeat(1024 * 1024));
  t.equal((await createSecretReader({ file: 'max' }, dir).read()).length, 1024 * 1024, '1 MiB is read');
  await writeFile(join(dir, 'huge'), Buffer.alloc(64 * 1024 * 1024, 0x6b));
  const before = process.memoryUsage().rss;
  await rejectsUnavailable(t, createSecretReader({ file: 'huge' }, dir).read(), /huge cannot be read \(the file is larger than 1048576 bytes\)/);
  t.ok(process.memoryUsage().rss - before < 32 * 1024 * 1024, 'not read into memory');
});

t.test('file: a Kubernetes-style ..data symlink swap is picked up within about a second', async (t) => {
  // The layout kubelet's atomic writer makes: key -> ..data/key, ..data -> ..<timestamp dir>.
  const mount = join(dir, 'mount');
  await mkdir(join(mount, '..2025_01_01_00_00_00.1'), { recursive: true });
  await writeFile(join(mount, '..2025_01_01_00_00_00.1', 'api-key'), 'old-secret\n');
  await symlink('..2025_01_01_00_00_00.1', join(mount, '..data'));
  await symlink('..data/api-key', join(mount, 'api-key'));
  const r = createSecretReader({ file: join(mount, 'api-key') }, '/unused');
  t.equal(await r.read(), 'old-secret');

  await mkdir(join(mount, '..2025_01_01_00_00_00.2'));
  await writeFile(join(mount, '..2025_01_01_00_00_00.2', 'api-key'), 'new-secret\n');
  await symlink('..2025_01_01_00_00_00.2', join(mount, '..data_tmp'));
  await rename(join(mount, '..data_tmp'), join(mount, '..data'));
  await rm(join(mount, '..2025_01_01_00_00_00.1'), { recursive: true });

  const { value, after } = await readUntilChanged(() => r.read(), 'old-secret');
  t.equal(value, 'new-secret');
  t.ok(after <= SECRET_RECHECK_MS + 1000, `seen after ${after} ms`);
});

t.test('file: replaced by rename, then deleted', async (t) => {
  const path = join(dir, 'rotating');
  await writeFile(path, 'v1');
  const r = createSecretReader({ file: path }, dir);
  t.equal(await r.read(), 'v1');
  await writeFile(`${path}.tmp`, 'v2');
  await rename(`${path}.tmp`, path);
  t.equal((await readUntilChanged(() => r.read(), 'v1')).value, 'v2');

  await unlink(path);
  // Within the re-check interval the cached value may still be served; after it, never.
  await new Promise((res) => setTimeout(res, SECRET_RECHECK_MS + 50));
  await rejectsUnavailable(t, r.read(), /ENOENT/, 'v2');
  await writeFile(path, 'v3');
  t.equal(await r.read(), 'v3', 'a secret that comes back is used again at once');
});

t.test('file: cheap when unchanged; concurrent reads due a check share one look at the file', async (t) => {
  let stats = 0;
  const { createSecretReader: counted } = await t.mockImport<typeof import('../../src/connectors/secrets.js')>('../../src/connectors/secrets.js', {
    '../../src/file-identity.js': {
      fileIdentity: (path: string) => {
        stats++;
        return fileIdentity(path);
      },
    },
  });
  const path = join(dir, 'shared');
  await writeFile(path, 'value');
  const r = counted({ file: path }, dir);
  const first = await Promise.all(Array.from({ length: 50 }, () => r.read()));
  t.ok(first.every((v) => v === 'value'));
  t.equal(stats, 1, 'one stat for 50 concurrent first reads');
  for (let i = 0; i < 1000; i++) await r.read();
  t.equal(stats, 1, 'no file system access within the re-check interval');
  await new Promise((res) => setTimeout(res, SECRET_RECHECK_MS + 20));
  await Promise.all(Array.from({ length: 50 }, () => r.read()));
  t.equal(stats, 2, 'one stat when the check is due');
});
