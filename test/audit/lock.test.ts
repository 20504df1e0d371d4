/**
 * One writer per audit log: a live writer's lock refuses a second one, an abandoned lock (stale, or
 * left by a process of this host that no longer exists) is taken over, a lock that is removed or
 * replaced under its writer is reported.
 */
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { acquireAuditLock, lockPathOf, removeAbandoned } from '../../src/audit/lock.js';
import { openAuditSink } from '../../src/audit/sink.js';

const STALE = 400;
const sinkOpts = (path: string, onWait?: (holder: string) => void) => ({
  path,
  onFailure: 'closed' as const,
  flushIntervalMs: 5,
  maxQueue: 100,
  lock: { staleMs: STALE, onWait },
});

function writeLock(logPath: string, holder: Record<string, unknown>, ageMs: number): void {
  const path = lockPathOf(logPath);
  writeFileSync(path, `${JSON.stringify(holder)}\n`);
  const when = new Date(Date.now() - ageMs);
  utimesSync(path, when, when);
}

t.test('the lock sits beside the log, hidden from NAME* globs', async (t) => {
  t.equal(lockPathOf('/var/log/agentwrit/audit.jsonl'), '/var/log/agentwrit/.audit.jsonl.lock');
});

t.test('a second writer on a live log is refused, naming the holder; after release it may open', async (t) => {
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  const first = await openAuditSink(sinkOpts(log));
  const holder = JSON.parse(readFileSync(lockPathOf(log), 'utf8'));
  t.same([holder.pid, holder.host], [process.pid, hostname()]);
  const waits: string[] = [];
  const started = Date.now();
  await t.rejects(
    openAuditSink(sinkOpts(log, (h) => waits.push(h))),
    new RegExp(`audit log .*audit\\.jsonl is in use by pid ${process.pid} on ${hostname()} .*give each its own audit\\.path`),
  );
  t.ok(Date.now() - started < STALE * 2, 'refused once the holder refreshed its lock, before the lock could go stale');
  t.equal(waits.length, 1);
  first.append({ type: 'request', time: 't', request_id: 'r1' });
  await first.close();
  t.notOk(existsSync(lockPathOf(log)), 'released on close');
  const second = await openAuditSink(sinkOpts(log));
  t.equal(second.head().seq, 1, 'the chain continues from the first writer');
  await second.close();
});

t.test('a stale lock (its writer crashed long ago) is taken over at once', async (t) => {
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  writeLock(log, { pid: 1, host: 'another-pod', since: 'x' }, STALE * 3);
  const waits: string[] = [];
  const sink = await openAuditSink(sinkOpts(log, (h) => waits.push(h)));
  t.equal(waits.length, 0);
  t.equal(JSON.parse(readFileSync(lockPathOf(log), 'utf8')).pid, process.pid);
  await sink.close();
});

t.test('a fresh lock that is never refreshed (a writer that just crashed) is taken over once stale', async (t) => {
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  writeLock(log, { pid: 1, host: 'another-pod', since: 'x' }, 0);
  const waits: string[] = [];
  const started = Date.now();
  const sink = await openAuditSink(sinkOpts(log, (h) => waits.push(h)));
  t.ok(Date.now() - started >= STALE * 0.8, 'waited for the lock to go stale');
  t.same(waits, ['pid 1 on another-pod since x']);
  await sink.close();
});

t.test('a lock of a process of this host that no longer exists is taken over at once', async (t) => {
  const child = spawn(process.execPath, ['-e', '']);
  const pid = child.pid as number;
  await new Promise((r) => child.once('exit', r));
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  writeLock(log, { pid, host: hostname(), since: 'x' }, 0);
  const started = Date.now();
  const sink = await openAuditSink(sinkOpts(log));
  t.ok(Date.now() - started < STALE / 2, 'no wait');
  await sink.close();
});

t.test('a lock file removed under its writer is created again', async (t) => {
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  const events: string[] = [];
  const lock = await acquireAuditLock(log, { staleMs: STALE, onLost: () => events.push('lost'), onRestored: () => events.push('restored') });
  const content = readFileSync(lockPathOf(log), 'utf8');
  unlinkSync(lockPathOf(log));
  await new Promise((r) => setTimeout(r, STALE / 2));
  t.same(events, ['restored']);
  t.equal(readFileSync(lockPathOf(log), 'utf8'), content, 'ours again');
  await lock.release();
  t.notOk(existsSync(lockPathOf(log)));
});

t.test('a sink whose lock is taken by another writer stops writing and answers as failing', async (t) => {
  for (const onFailure of ['closed', 'open'] as const) {
    const dir = t.testdir({});
    const log = join(dir, 'audit.jsonl');
    const lost: string[] = [];
    const sink = await openAuditSink({ ...sinkOpts(log), onFailure, lock: { staleMs: STALE, onLost: (r) => lost.push(r) } });
    t.equal(sink.append({ type: 'request', time: 't', request_id: 'before' }), true);
    await sink.flush();
    writeFileSync(lockPathOf(log), '{"pid":2,"host":"intruder"}\n');
    await new Promise((r) => setTimeout(r, STALE / 2));
    t.equal(lost.length, 1, `${onFailure}: the loss is reported`);
    t.equal(sink.healthy(), false, `${onFailure}: unhealthy from now on`);
    t.equal(sink.append({ type: 'request', time: 't', request_id: 'after' }), onFailure === 'open', `${onFailure}: append answers as a failing sink`);
    t.match(lost[0], /no longer ours: another writer holds it now \(pid 2 on intruder/);
    await t.rejects(sink.close(), /audit: writing stopped, 1 records not written: .*another writer holds it now/);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    t.equal(lines.length, 1, `${onFailure}: nothing written after the loss`);
    t.equal(readFileSync(lockPathOf(log), 'utf8'), '{"pid":2,"host":"intruder"}\n', "the other writer's lock is left alone");
  }
});

t.test('a lock taken away is noticed at the next batch, long before the next refresh', async (t) => {
  const slow = 60_000; // refreshes every 12 s: none runs during this test
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  const lost: string[] = [];
  const restored: number[] = [];
  const sink = await openAuditSink({ ...sinkOpts(log), lock: { staleMs: slow, onLost: (r) => lost.push(r), onRestored: () => restored.push(1) } });
  sink.append({ type: 'request', time: 't', request_id: 'first' });
  await sink.flush();
  // Removed by hand: the next batch creates it again and is written.
  unlinkSync(lockPathOf(log));
  sink.append({ type: 'request', time: 't', request_id: 'second' });
  await sink.flush();
  t.same([restored.length, lost.length], [1, 0], 'restored at the write, not lost');
  t.equal(JSON.parse(readFileSync(lockPathOf(log), 'utf8')).pid, process.pid);
  // Taken over as another writer does it: the old file set aside, a new one created in its place.
  renameSync(lockPathOf(log), `${lockPathOf(log)}.aside`);
  writeFileSync(lockPathOf(log), '{"pid":2,"host":"intruder"}\n');
  sink.append({ type: 'request', time: 't', request_id: 'third' });
  await t.rejects(sink.flush(), /another writer holds it now \(pid 2 on intruder/);
  t.equal(lost.length, 1, 'the loss is reported once');
  t.equal(sink.healthy(), false);
  const ids = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l).request_id);
  t.same(ids, ['first', 'second'], 'nothing written after the loss');
  await t.rejects(sink.close(), /1 records not written/);
});

t.test('a lock that cannot be read for a while (too many open files) is not taken for lost', async (t) => {
  let failing = false;
  const fsp = await import('node:fs/promises');
  const emfile = () => Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' });
  const { acquireAuditLock: acquire } = await t.mockImport<typeof import('../../src/audit/lock.js')>('../../src/audit/lock.js', {
    'node:fs/promises': {
      ...fsp,
      readFile: (...a: Parameters<typeof fsp.readFile>) => (failing ? Promise.reject(emfile()) : fsp.readFile(...a)),
      stat: (...a: Parameters<typeof fsp.stat>) => (failing ? Promise.reject(emfile()) : fsp.stat(...a)),
    },
  });
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  const lost: string[] = [];
  const lock = await acquire(log, { staleMs: STALE, onLost: (r) => lost.push(r) });
  failing = true;
  t.equal(await lock.verify(), true, 'a batch goes on while the lock cannot be looked at');
  await new Promise((r) => setTimeout(r, STALE)); // several refreshes fail meanwhile
  failing = false;
  t.same(lost, [], 'not reported lost');
  t.equal(await lock.verify(), true);
  writeFileSync(lockPathOf(log), '{"pid":2,"host":"intruder"}\n');
  await new Promise((r) => setTimeout(r, STALE / 2));
  t.equal(lost.length, 1, 'a real loss is still told');
  await lock.release();
});

t.test('a lock removed or replaced under its writer is reported once', async (t) => {
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  const lost: string[] = [];
  const lock = await acquireAuditLock(log, { staleMs: STALE, onLost: (r) => lost.push(r) });
  writeFileSync(lockPathOf(log), '{"pid":2,"host":"intruder"}\n');
  await new Promise((r) => setTimeout(r, STALE));
  t.equal(lost.length, 1);
  t.match(lost[0], /is no longer ours: another writer holds it now/);
  await lock.release();
  t.ok(existsSync(lockPathOf(log)), "someone else's lock is not removed on release");
});

t.test('a lock that cannot be created fails the open with the path', async (t) => {
  await t.rejects(openAuditSink(sinkOpts('/nonexistent-dir/audit.jsonl')), /^audit log \/nonexistent-dir\/audit\.jsonl: cannot create its lock file \/nonexistent-dir\/\.audit\.jsonl\.lock: ENOENT$/);
});

t.test('taking over removes only the abandoned lock it looked at', async (t) => {
  const dir = t.testdir({});
  const log = join(dir, 'audit.jsonl');
  const lock = lockPathOf(log);
  writeLock(log, { pid: 1, host: 'crashed' }, STALE * 3);
  const abandoned = statSync(lock);
  // Another writer takes the lock over between our look and our removal.
  writeFileSync(join(dir, 'fresh'), '{"pid":2,"host":"quicker"}\n');
  renameSync(join(dir, 'fresh'), lock);
  await removeAbandoned(lock, abandoned);
  t.equal(readFileSync(lock, 'utf8'), '{"pid":2,"host":"quicker"}\n', "the other writer's lock stays");
  await removeAbandoned(lock, statSync(lock));
  t.notOk(existsSync(lock), 'the lock that was looked at is removed');
  t.same(readdirSync(dir), [], 'nothing left aside');
});

t.test('a log reached through a symlink has one lock: a writer given the link and one given the file exclude each other', async (t) => {
  const dir = t.testdir({ data: {} });
  const real = join(dir, 'data', 'audit.jsonl');
  const link = join(dir, 'audit.jsonl');
  symlinkSync(real, link); // dangling until the first writer creates the file
  const first = await openAuditSink(sinkOpts(link));
  t.ok(existsSync(lockPathOf(real)), 'the lock is beside the file itself');
  t.notOk(existsSync(lockPathOf(link)), 'not beside the link');
  await t.rejects(openAuditSink(sinkOpts(real)), /is in use by pid/);
  first.append({ type: 'request', time: 't', request_id: 'r1' });
  await first.close();
  t.ok(lstatSync(link).isSymbolicLink(), 'the link is left as it was');
  t.equal(readFileSync(real, 'utf8').split('\n').filter(Boolean).length, 1, 'the record is in the file the link names');
});
