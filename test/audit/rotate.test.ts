/**
 * Size-based rotation of the audit file: the files, oldest first, verify as one chain; the newest
 * alone verifies from its `rotated` record; only rotateKeep old files stay; a restart goes on with
 * the chain, also when it finds the current file empty after a rotation.
 */
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { type AuditSinkOptions, openAuditSink } from '../../src/audit/sink.js';
import { runAuditCommand } from '../../src/cli/audit.js';

const event = (i: number) => ({ type: 'request' as const, time: '2026-11-24T08:00:00.000Z', request_id: `r-${i}`, decision: 'allow' as const, route: 'billing-read' });

/** Appends `n` records in batches of 10, each batch written before the next (one write each). */
async function write(opts: AuditSinkOptions, from: number, n: number) {
  const sink = await openAuditSink(opts);
  for (let i = from; i < from + n; i += 10) {
    for (let j = i; j < Math.min(i + 10, from + n); j++) sink.append(event(j));
    await sink.flush();
  }
  await sink.close();
  return sink.head();
}

const lines = async (path: string) => (await readFile(path, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

function verify(files: string[]) {
  let out = '';
  let err = '';
  return runAuditCommand(['verify', ...files], { out: (s) => (out += s), err: (s) => (err += s) }).then((code) => ({ code, out, err }));
}

t.test('files rotate past rotateBytes and verify as one chain, oldest first', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'audit.jsonl');
  const opts: AuditSinkOptions = { path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100, rotateBytes: 3000, rotateKeep: 2 };
  const head = await write(opts, 0, 60);
  t.ok(existsSync(`${path}.1`) && existsSync(`${path}.2`), 'two rotated files');
  t.notOk(existsSync(`${path}.3`), 'none past rotateKeep');

  const [older, old, current] = [await lines(`${path}.2`), await lines(`${path}.1`), await lines(path)];
  for (const file of [older, old, current]) t.match(file[0], { type: 'rotated', previous_file: 'audit.jsonl.1' }, 'each file opens with a rotated record');
  t.equal(old[0].seq, (older.at(-1)?.seq as number) + 1, 'seq goes on across files');
  t.equal(old[0].prev_hash, older.at(-1)?.hash, 'and so does the hash chain');
  t.equal(current.at(-1)?.hash, head.hash);
  // 60 requests and one rotated record per new file: the newest seq counts them all.
  const requests = [older, old, current].flat().filter((r) => r.type === 'request').map((r) => r.request_id);
  t.same(requests, Array.from({ length: requests.length }, (_, i) => `r-${60 - requests.length + i}`), 'the records kept are the newest, in order');

  const all = await verify([`${path}.2`, `${path}.1`, path]);
  t.equal(all.code, 0, all.out + all.err);
  t.match(all.out, new RegExp(`ok: ${older.length + old.length + current.length} records, chain intact\\nstarts at seq ${older[0].seq}, continuing prev_hash [0-9a-f]{64}`));
  t.match(all.out, `head hash: ${head.hash}`);
  const alone = await verify([path]);
  t.equal(alone.code, 0, 'the newest file alone verifies from its rotated record');

  const gap = await verify([`${path}.2`, path]);
  t.equal(gap.code, 1, 'a missing file in between is found');
  t.match(gap.out, `TAMPERED or damaged: ${path} line 1 (seq ${current[0].seq}): seq gap`);
  const order = await verify([`${path}.1`, `${path}.2`, path]);
  t.equal(order.code, 1, 'files out of order are found');

  // A rotated file whose first (rotated) record was cut off no longer verifies on its own.
  await writeFile(`${path}.1`, `${(await readFile(`${path}.1`, 'utf8')).split('\n').slice(1).join('\n')}`);
  t.equal((await verify([`${path}.1`])).code, 1, 'a file cut at the front is found');
});

t.test('records moved from one file into the next, or a file emptied into it, are found', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'audit.jsonl');
  await write({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100, rotateBytes: 3000, rotateKeep: 2 }, 0, 60);
  const [a, b, c] = [await readFile(`${path}.2`, 'utf8'), await readFile(`${path}.1`, 'utf8'), await readFile(path, 'utf8')];
  const files = [`${path}.2`, `${path}.1`, path];
  t.equal((await verify(files)).code, 0);

  // The last record of .1 moved to the front of the current file: one stream, but not the files the sink wrote.
  const bLines = b.split('\n').filter(Boolean);
  await writeFile(`${path}.1`, `${bLines.slice(0, -1).join('\n')}\n`);
  await writeFile(path, `${bLines.at(-1)}\n${c}`);
  const moved = await verify(files);
  t.equal(moved.code, 1, 'a record moved across a file boundary');
  t.match(moved.out, `TAMPERED or damaged: ${path} line 1`);
  t.match(moved.out, /does not start with its rotated record/);

  // All of .1 merged into the current file, .1 left empty.
  await writeFile(`${path}.1`, '');
  await writeFile(path, b + c);
  const merged = await verify(files);
  t.equal(merged.code, 1, 'a file emptied into the next');
  t.match(merged.out, /an empty file before others/);

  // The current file appended to .1, and left empty: a rotated record inside .1.
  await writeFile(`${path}.1`, b + c);
  await writeFile(path, '');
  const appended = await verify(files);
  t.equal(appended.code, 1, 'the newest file emptied into the one before it');
  t.match(appended.out, /a rotated record that does not start its file/);

  // The oldest file given emptied into the next: an empty first file.
  await writeFile(`${path}.2`, '');
  await writeFile(`${path}.1`, a + b);
  await writeFile(path, c);
  const front = await verify(files);
  t.equal(front.code, 1, 'the oldest file emptied into the next');
  t.match(front.out, /an empty file before others/);

  // As written, and an empty newest file (the sink had just opened it): fine.
  await writeFile(`${path}.2`, a);
  await writeFile(`${path}.1`, b);
  await writeFile(path, c);
  await writeFile(`${path}.new`, '');
  t.equal((await verify([...files, `${path}.new`])).code, 0, 'only the last file may be empty');
});

t.test('a restart continues the chain, also from PATH.1 when PATH is empty', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'audit.jsonl');
  const opts: AuditSinkOptions = { path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100, rotateBytes: 100_000, rotateKeep: 3 };
  const first = await write(opts, 0, 20);
  t.notOk(existsSync(`${path}.1`), 'not full yet');
  const second = await write(opts, 20, 20);
  t.equal(second.seq, first.seq + 20, 'the same file goes on after a restart');

  // As if the process stopped right after setting the full file aside.
  await rename(path, `${path}.1`);
  const third = await write(opts, 40, 5);
  const current = await lines(path);
  t.match(current[0], { type: 'rotated', seq: second.seq + 1, prev_hash: second.hash });
  t.equal(third.seq, second.seq + 6);
  t.equal((await verify([`${path}.1`, path])).code, 0);

  // As if the process died in the middle of the first write to a new file.
  await rename(path, `${path}.1`);
  await writeFile(path, '{"type":"rotated","previous_fi');
  const fourth = await write(opts, 45, 3);
  const recovered = await lines(path);
  t.match(recovered.slice(0, 2), [
    { type: 'rotated', seq: third.seq + 1, prev_hash: third.hash },
    { type: 'recovery', truncated_bytes: 30 },
  ], 'the rotated record still opens the file, then the recovery note');
  t.equal(fourth.seq, third.seq + 5);
  const both = await verify([`${path}.1`, path]);
  t.equal(both.code, 0, both.out);
  t.equal((await verify([path])).code, 0, 'and the file verifies alone');

  // Rotation switched off in the configuration since: an empty PATH still goes on from PATH.1.
  await rename(path, `${path}.1`);
  await writeFile(path, '');
  const fifth = await write({ ...opts, rotateBytes: 0 }, 48, 2);
  t.match((await lines(path))[0], { type: 'rotated', seq: fourth.seq + 1, prev_hash: fourth.hash }, 'without rotation configured too');
  t.equal(fifth.seq, fourth.seq + 3);
  t.equal((await verify([`${path}.1`, path])).code, 0);
});

t.test('a rename that fails half-way through the shift: the retry goes on from there, nothing lost twice', async (t) => {
  const dir = t.testdir({});
  const path = join(dir, 'audit.jsonl');
  let failNext = false;
  let failed = 0;
  const { openAuditSink: faulty } = await t.mockImport<typeof import('../../src/audit/sink.js')>('../../src/audit/sink.js', {
    'node:fs/promises': {
      ...fsp,
      rename: async (from: string, to: string) => {
        // Fault injection: moving PATH.1 to PATH.2 fails once, after PATH.2 has moved to PATH.3.
        if (failNext && from.endsWith('.jsonl.1')) {
          failNext = false;
          failed++;
          throw Object.assign(new Error('EIO: i/o error, rename'), { code: 'EIO' });
        }
        return fsp.rename(from, to);
      },
    },
  });
  const opts: AuditSinkOptions = { path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 1000, rotateBytes: 1500, rotateKeep: 3 };
  const sink = await faulty(opts);
  let n = 0;
  const batch = async () => {
    for (let j = 0; j < 10; j++) sink.append(event(n++));
    await sink.flush().catch(() => {});
  };
  while (!existsSync(`${path}.3`)) await batch(); // PATH, PATH.1, PATH.2 and PATH.3 all hold records now
  const before = await Promise.all([path, `${path}.1`, `${path}.2`].map(lines));
  failNext = true;
  for (let i = 0; i < 20 && failed === 0; i++) await batch();
  t.equal(failed, 1, 'the injected failure happened');
  await sink.close(); // writes what is queued: the retried rotation, then the batch
  const after = await Promise.all([`${path}.3`, `${path}.2`, `${path}.1`].map(lines));
  t.same(after.map((f) => f[0].seq), before.reverse().map((f) => f[0].seq), 'each file moved exactly one place: none deleted or moved twice');
  const all = await verify([`${path}.3`, `${path}.2`, `${path}.1`, path]);
  t.equal(all.code, 0, all.out);
  const requests = [...after.flat(), ...(await lines(path))].filter((r) => r.type === 'request').map((r) => r.request_id);
  t.equal(requests.at(-1), `r-${n - 1}`, 'the newest record is kept');
});

t.test('a log path that is a symlink: rotation moves the file it names, the link stays and names the new file', async (t) => {
  const dir = t.testdir({ data: {} });
  const real = join(dir, 'data', 'audit.jsonl');
  const link = join(dir, 'audit.jsonl');
  await fsp.symlink(real, link);
  const opts: AuditSinkOptions = { path: link, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100, rotateBytes: 3000, rotateKeep: 2 };
  await write(opts, 0, 30);
  t.ok((await fsp.lstat(link)).isSymbolicLink(), 'the link is still a link');
  t.ok(existsSync(`${real}.1`), 'the file it names was rotated beside it');
  t.notOk(existsSync(`${link}.1`), 'nothing rotated beside the link');
  const files = [`${real}.2`, `${real}.1`, real].filter((f) => existsSync(f));
  const r = await verify(files);
  t.equal(r.code, 0, r.err);
  t.match(await lines(link), [{ type: 'rotated' }], 'the link reads the newest file');
});
