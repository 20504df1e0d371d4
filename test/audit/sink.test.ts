import * as fsp from 'node:fs/promises';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { openAuditSink as realOpenAuditSink } from '../../src/audit/sink.js';
import type { AuditEvent } from '../../src/audit/types.js';
import { verifyAuditStream } from '../../src/audit/verify.js';

const dir = await mkdtemp(join(tmpdir(), 'aw-sink-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = () => join(dir, `audit-${++n}.jsonl`);

const ev = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  type: 'request',
  time: new Date().toISOString(),
  request_id: `req-${i}`,
  decision: 'allow',
  route: 'billing-read',
  ...extra,
});

async function records(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, 'utf8');
  return text === '' ? [] : text.trimEnd().split('\n').map((l) => JSON.parse(l));
}

async function verifyFile(path: string) {
  return verifyAuditStream(Readable.from([await readFile(path)]));
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Fault injection: the sink's file writes can be made to fail, or to write only part of a batch. */
const fault = { mode: 'ok' as 'ok' | 'fail' | 'partial', writes: 0 };
const { openAuditSink: faultyOpenAuditSink } = await t.mockImport<typeof import('../../src/audit/sink.js')>('../../src/audit/sink.js', {
  'node:fs/promises': {
    ...fsp,
    open: async (...args: Parameters<typeof fsp.open>) => {
      const fh = await fsp.open(...args);
      const realWrite = fh.write.bind(fh) as (b: Buffer, o: number, l: number) => Promise<{ bytesWritten: number }>;
      Object.assign(fh, {
        write: async (buf: Buffer, offset: number, length: number) => {
          fault.writes++;
          if (fault.mode === 'fail') throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          if (fault.mode === 'partial') {
            fault.mode = 'fail';
            return realWrite(buf, offset, Math.min(length, 25));
          }
          return realWrite(buf, offset, length);
        },
      });
      return fh;
    },
  },
});
t.beforeEach(() => {
  fault.mode = 'ok';
  fault.writes = 0;
});

t.test('records are chained from the genesis hash and batched', async (t) => {
  const path = freshPath();
  const sink = await faultyOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 20, maxQueue: 10_000 });
  const accepted = Array.from({ length: 3000 }, (_, i) => sink.append(ev(i + 1)));
  t.ok(accepted.every(Boolean), 'every append accepted');
  t.equal(sink.queueDepth(), 3000, 'append only queues');
  await sink.flush();
  t.equal(sink.queueDepth(), 0);
  t.ok(fault.writes <= 10, `3000 records in ${fault.writes} writes`);
  const recs = await records(path);
  t.equal(recs.length, 3000);
  t.equal(recs[0].prev_hash, '0'.repeat(64));
  t.same(
    recs.map((r) => r.seq),
    recs.map((_, i) => i + 1),
  );
  t.same(
    recs.map((r) => r.request_id),
    recs.map((_, i) => `req-${i + 1}`),
    'file order is append order',
  );
  t.match(await verifyFile(path), { ok: true, records: 3000, headHash: recs[2999].hash });
  t.same(sink.head(), { seq: 3000, hash: recs[2999].hash });
  await sink.close();
});

t.test('a record waits at most about flushInterval before it is written', async (t) => {
  const path = freshPath();
  const sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 30, maxQueue: 100 });
  t.teardown(() => sink.close());
  const start = Date.now();
  sink.append(ev(1));
  t.same(await records(path), [], 'not written synchronously');
  await until(() => sink.queueDepth() === 0);
  t.equal((await records(path)).length, 1);
  t.ok(Date.now() - start >= 20, 'batched for the interval');
});

t.test('a restart continues seq and prev_hash', async (t) => {
  const path = freshPath();
  let sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  for (let i = 1; i <= 3; i++) sink.append(ev(i));
  await sink.close();
  sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  t.equal(sink.recovered, undefined);
  sink.append(ev(4, { raw_path: `/${'x'.repeat(150_000)}` }));
  await sink.close();
  // The last line is now longer than one read chunk: the tail scan must still find its start.
  sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  sink.append(ev(5));
  await sink.close();
  const recs = await records(path);
  t.same(
    recs.map((r) => r.seq),
    [1, 2, 3, 4, 5],
  );
  t.match(await verifyFile(path), { ok: true, records: 5 });
});

t.test('a torn last line is cut away and noted in the chain', async (t) => {
  const path = freshPath();
  let sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  for (let i = 1; i <= 3; i++) sink.append(ev(i));
  await sink.close();
  const torn = '{"bytes_in":0,"connector":"billing-a';
  await appendFile(path, torn);
  t.match(await verifyFile(path), { ok: false, firstBad: { line: 4, reason: /incomplete last line/ } });

  sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  t.same(sink.recovered, { truncatedBytes: torn.length });
  sink.append(ev(4));
  await sink.close();
  const recs = await records(path);
  t.equal(recs.length, 5);
  t.match(recs[3], { seq: 4, type: 'recovery', truncated_bytes: torn.length, truncated_sha256: /^[0-9a-f]{64}$/ });
  t.match(recs[4], { seq: 5, request_id: 'req-4' });
  t.match(await verifyFile(path), { ok: true, records: 5 });
});

t.test('a file holding only a torn fragment starts a new chain with the note', async (t) => {
  const path = freshPath();
  await writeFile(path, Buffer.from([0, 0, 0, 0]));
  const sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  sink.append(ev(1));
  await sink.close();
  t.match(await records(path), [{ seq: 1, type: 'recovery', truncated_bytes: 4 }, { seq: 2 }]);
  t.match(await verifyFile(path), { ok: true, records: 2 });
});

t.test('an invalid last record is not guessed at: the sink refuses to open', async (t) => {
  const path = freshPath();
  const sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  sink.append(ev(1));
  sink.append(ev(2));
  await sink.close();
  const text = await readFile(path, 'utf8');
  await writeFile(path, text.replace('"req-2"', '"req-X"'));
  await t.rejects(realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 }), /last record is not valid \(hash mismatch.*audit verify/);
  await writeFile(path, `${text}\n`);
  await t.rejects(realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 }), /not valid \(not JSON/);
  await t.rejects(realOpenAuditSink({ path: join(path, 'sub.jsonl'), onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 }), /ENOTDIR/);
});

t.test('closed mode: a failing disk refuses records, queued ones are retried in order', async (t) => {
  const path = freshPath();
  const errors: string[] = [];
  const sink = await faultyOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100, onWriteError: (e) => errors.push(e.message) });
  t.equal(sink.append(ev(1)), true);
  await sink.flush();
  t.equal(sink.healthy(), true);

  fault.mode = 'fail';
  t.equal(sink.append(ev(2)), true, 'the failure is not known yet');
  await t.rejects(sink.flush(), /ENOSPC/);
  t.equal(sink.healthy(), false);
  t.equal(sink.append(ev(3)), false, 'refused while failing');
  t.equal(sink.failures(), 1);
  t.equal(sink.queueDepth(), 1, 'the queued record is kept');
  t.match(errors[0], /ENOSPC/);

  fault.mode = 'ok';
  await until(() => sink.healthy());
  t.equal(sink.append(ev(4)), true);
  await sink.close();
  const recs = await records(path);
  t.same(
    recs.map((r) => r.request_id),
    ['req-1', 'req-2', 'req-4'],
  );
  t.match(await verifyFile(path), { ok: true, records: 3 });
});

t.test('a write that reaches the disk only partly resumes where it stopped', async (t) => {
  const path = freshPath();
  const sink = await faultyOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  fault.mode = 'partial';
  for (let i = 1; i <= 5; i++) sink.append(ev(i));
  await t.rejects(sink.flush(), /ENOSPC/);
  t.equal((await readFile(path, 'utf8')).length, 25, 'part of the batch is on disk');
  fault.mode = 'ok';
  await sink.close();
  t.match(await verifyFile(path), { ok: true, records: 5 });
});

t.test('open mode: requests go on, the loss is counted, nothing is lost while there is room', async (t) => {
  const path = freshPath();
  const sink = await faultyOpenAuditSink({ path, onFailure: 'open', flushIntervalMs: 5, maxQueue: 5 });
  fault.mode = 'fail';
  for (let i = 1; i <= 10; i++) t.equal(sink.append(ev(i)), true);
  t.equal(sink.queueDepth(), 5);
  t.equal(sink.failures(), 5, 'records beyond maxQueue are dropped and counted');
  t.equal(sink.healthy(), false);
  await until(() => fault.writes > 0);
  fault.mode = 'ok';
  await until(() => sink.healthy());
  await sink.close();
  const recs = await records(path);
  t.same(
    recs.map((r) => r.request_id),
    ['req-1', 'req-2', 'req-3', 'req-4', 'req-5'],
  );
  t.match(await verifyFile(path), { ok: true, records: 5 }, 'dropped records leave no gap in the chain');
});

t.test('closed mode: a full queue refuses', async (t) => {
  const path = freshPath();
  const sink = await realOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 1000, maxQueue: 3 });
  t.same([1, 2, 3, 4].map((i) => sink.append(ev(i))), [true, true, true, false]);
  t.equal(sink.healthy(), false);
  t.equal(sink.failures(), 1);
  await sink.flush();
  t.equal(sink.healthy(), true);
  await sink.close();
});

t.test('close: flushes, syncs, is idempotent; appends after it are refused', async (t) => {
  const path = freshPath();
  const sink = await realOpenAuditSink({ path, onFailure: 'open', flushIntervalMs: 10_000, maxQueue: 100 });
  for (let i = 1; i <= 10; i++) sink.append(ev(i));
  const a = sink.close();
  const b = sink.close();
  t.equal(a, b, 'the same promise');
  await a;
  t.equal((await records(path)).length, 10);
  t.equal(sink.append(ev(11)), false);
  t.equal(sink.healthy(), false);
  await sink.close();
});

t.test('close with a disk that stays broken reports the loss', async (t) => {
  const path = freshPath();
  const sink = await faultyOpenAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  fault.mode = 'fail';
  sink.append(ev(1));
  sink.append(ev(2));
  await t.rejects(sink.close(), /audit: 2 records could not be written: ENOSPC/);
  t.equal(sink.failures(), 2);
});

t.test('path "-" writes the chain to stdout', async (t) => {
  const script = join(dir, 'to-stdout.mjs');
  const sinkUrl = new URL('../../src/audit/sink.js', import.meta.url).href;
  await writeFile(
    script,
    `import { openAuditSink } from ${JSON.stringify(sinkUrl)};
const sink = await openAuditSink({ path: '-', onFailure: 'closed', flushIntervalMs: 5, maxQueue: 10 });
for (let i = 1; i <= 3; i++) sink.append({ type: 'request', time: 't', request_id: 'r' + i });
await sink.close();
`,
  );
  const { execFile } = await import('node:child_process');
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [...process.execArgv, script], (err, out, errOut) => (err ? reject(new Error(errOut)) : resolve(out))),
  );
  const r = await verifyAuditStream(Readable.from([stdout]));
  t.match(r, { ok: true, records: 3 });
  t.match(JSON.parse(stdout.split('\n')[0]), { seq: 1, request_id: 'r1', prev_hash: '0'.repeat(64) });
});
