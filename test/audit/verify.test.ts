import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { openAuditSink } from '../../src/audit/sink.js';
import { verifyAuditStream } from '../../src/audit/verify.js';
import { runAuditCommand } from '../../src/cli/audit.js';

const dir = await mkdtemp(join(tmpdir(), 'aw-verify-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

/** Five real records written by the sink. */
async function goodLog(): Promise<string[]> {
  const path = join(dir, `good-${Math.random().toString(36).slice(2)}.jsonl`);
  const sink = await openAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  for (let i = 1; i <= 5; i++) {
    sink.append({ type: 'request', time: `2025-01-01T00:00:0${i}.000Z`, request_id: `r${i}`, decision: i % 2 ? 'allow' : 'deny', route: 'billing-read', scopes: [`read:billing:customer-${i}`] });
  }
  await sink.close();
  const lines = (await readFile(path, 'utf8')).split('\n');
  t.equal(lines.pop(), '', 'the file ends with a newline');
  return lines;
}

const verifyText = (text: string) => verifyAuditStream(Readable.from([Buffer.from(text)]));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** A forged record whose own hash is right: what someone who knows the format can produce. */
function forge(body: Record<string, unknown>): string {
  const canonical = `{${Object.keys(body)
    .filter((k) => body[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${JSON.stringify(body[k])}`)
    .join(',')}}`;
  return `${canonical.slice(0, -1)},"hash":"${sha(canonical)}"}`;
}

t.test('an intact log verifies: count and head hash', async (t) => {
  const lines = await goodLog();
  const r = await verifyText(`${lines.join('\n')}\n`);
  t.same(r, { ok: true, records: 5, headHash: JSON.parse(lines[4]).hash });
  t.equal(JSON.parse(lines[0]).prev_hash, '0'.repeat(64));
  // Feeding it one byte at a time exercises lines split across chunks (and multi-byte characters).
  const bytes = Buffer.from(`${lines.join('\n')}\n`);
  const oneByOne = await verifyAuditStream(Readable.from([...bytes].map((b) => Buffer.from([b]))));
  t.same(oneByOne, r);
  t.same(await verifyText(''), { ok: true, records: 0, headHash: '0'.repeat(64) });
});

t.test('a record of several MiB (a request head near the 1 MiB limit, repeated in its fields) verifies', async (t) => {
  const path = join(dir, 'long.jsonl');
  const sink = await openAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  const long = 'x'.repeat(1024 * 1024);
  sink.append({ type: 'request', time: '2025-01-01T00:00:01.000Z', request_id: 'r1', decision: 'deny', raw_path: `/customers/${long}/billing`, scopes: [`read:billing:customer-${long}`, `read:other:${long}`] });
  await sink.close();
  const r = await verifyAuditStream(createReadStream(path));
  t.equal(r.ok, true, JSON.stringify(r.firstBad));
  t.equal(r.records, 1);
});

t.test('tampering is found and the first bad record named', async (t) => {
  const lines = await goodLog();
  const rec = lines.map((l) => JSON.parse(l));
  const chainedForgery = forge({ ...rec[1], hash: undefined, seq: 3, prev_hash: rec[1].hash });
  const cases: [string, string[], { line: number; seq?: number; reason: RegExp }][] = [
    ['edited field', lines.map((l, i) => (i === 2 ? l.replace('"allow"', '"deny"') : l)), { line: 3, seq: 3, reason: /hash mismatch/ }],
    ['deleted middle record', lines.filter((_, i) => i !== 2), { line: 3, seq: 4, reason: /seq gap: expected 3, found 4/ }],
    [
      'forged record inserted, own hash right, prev wrong',
      [...lines.slice(0, 2), forge({ ...rec[1], hash: undefined, seq: 3, prev_hash: rec[0].hash, decision: 'allow' }), ...lines.slice(2)],
      { line: 3, seq: 3, reason: /prev_hash mismatch/ },
    ],
    [
      'forged record inserted, chained right, so the next seq repeats',
      [...lines.slice(0, 2), chainedForgery, ...lines.slice(2)],
      { line: 4, seq: 3, reason: /seq gap: expected 4, found 3/ },
    ],
    ['two records swapped', [lines[0], lines[2], lines[1], lines[3], lines[4]], { line: 2, seq: 3, reason: /seq gap/ }],
    ['garbage line', [lines[0], 'this is not json', ...lines.slice(1)], { line: 2, reason: /not JSON/ }],
    ['empty line', [lines[0], '', ...lines.slice(1)], { line: 2, reason: /empty line/ }],
    ['record re-encoded with spaces', lines.map((l, i) => (i === 1 ? l.replace(',"seq"', ', "seq"') : l)), { line: 2, seq: 2, reason: /canonical/ }],
  ];
  for (const [name, tampered, bad] of cases) {
    const r = await verifyText(`${tampered.join('\n')}\n`);
    t.equal(r.ok, false, name);
    t.match(r.firstBad, bad, name);
    t.equal(r.records, bad.line - 1, `${name}: records before the bad one`);
    const lastGood = tampered[bad.line - 2];
    t.equal(r.headHash, JSON.parse(lastGood).hash, `${name}: head of the valid part`);
  }
});

t.test('bytes that are not UTF-8 are found, even where they would read as the U+FFFD a record holds', async (t) => {
  const path = join(dir, 'fffd.jsonl');
  const sink = await openAuditSink({ path, onFailure: 'closed', flushIntervalMs: 5, maxQueue: 100 });
  sink.append({ type: 'request', time: '2025-01-01T00:00:01.000Z', request_id: 'r1', decision: 'allow', task_id: 'task-\ufffd' });
  sink.append({ type: 'request', time: '2025-01-01T00:00:02.000Z', request_id: 'r2', decision: 'allow' });
  await sink.close();
  const bytes = await readFile(path);
  t.match(await verifyAuditStream(Readable.from([bytes])), { ok: true, records: 2 });
  const at = bytes.indexOf(Buffer.from('\ufffd'));
  const changed = Buffer.concat([bytes.subarray(0, at), Buffer.from([0xff]), bytes.subarray(at + 3)]);
  t.match(await verifyAuditStream(Readable.from([changed])), { ok: false, records: 0, firstBad: { line: 1, reason: /not valid UTF-8/ } });
  // A byte-order mark put in front of a record is a change too.
  const nl = bytes.indexOf(10);
  const bom = Buffer.concat([bytes.subarray(0, nl + 1), Buffer.from([0xef, 0xbb, 0xbf]), bytes.subarray(nl + 1)]);
  t.match(await verifyAuditStream(Readable.from([bom])), { ok: false, records: 1, firstBad: { line: 2 } });
});

t.test('a torn last line is reported; removing the last record is not (compare the head hash)', async (t) => {
  const lines = await goodLog();
  const torn = await verifyText(`${lines.join('\n')}\n${lines[0].slice(0, 30)}`);
  t.match(torn, { ok: false, records: 5, firstBad: { line: 6, reason: /incomplete last line/ } });
  const noNewline = await verifyText(lines.join('\n'));
  t.match(noNewline, { ok: false, records: 4, firstBad: { line: 5, seq: 5, reason: /incomplete last line.*complete record/ } });
  const cut = await verifyText(`${lines.slice(0, 4).join('\n')}\n`);
  t.equal(cut.ok, true, 'an unkeyed chain cannot show a removed tail');
  t.not(cut.headHash, JSON.parse(lines[4]).hash, '... but the head hash differs from the one kept elsewhere');
});

function capture(stdin?: NodeJS.ReadableStream) {
  const io = {
    stdout: '',
    stderr: '',
    stdin,
    out(s: string) {
      io.stdout += s;
    },
    err(s: string) {
      io.stderr += s;
    },
  };
  return io;
}

t.test('CLI: audit verify FILE and -', async (t) => {
  const lines = await goodLog();
  const head = JSON.parse(lines[4]).hash;
  const good = join(dir, 'cli-good.jsonl');
  await writeFile(good, `${lines.join('\n')}\n`);
  let io = capture();
  t.equal(await runAuditCommand(['verify', good], io), 0);
  t.match(io.stdout, /ok: 5 records/);
  t.match(io.stdout, `head hash: ${head}`);
  t.equal(io.stderr, '');

  io = capture(Readable.from([`${lines.join('\n')}\n`]));
  t.equal(await runAuditCommand(['verify', '-'], io), 0, 'stdin');
  t.match(io.stdout, `head hash: ${head}`);

  const bad = join(dir, 'cli-bad.jsonl');
  await writeFile(bad, `${lines.map((l, i) => (i === 3 ? l.replace('"deny"', '"allow"') : l)).join('\n')}\n`);
  io = capture();
  t.equal(await runAuditCommand(['verify', bad], io), 1);
  t.match(io.stdout, /line 4 \(seq 4\): hash mismatch/);
  t.match(io.stdout, /3 records verified before it/);

  io = capture();
  t.equal(await runAuditCommand(['verify', '--json', bad], io), 1);
  t.match(JSON.parse(io.stdout), { ok: false, records: 3, firstBad: { line: 4, seq: 4 } });

  io = capture();
  t.equal(await runAuditCommand(['verify', join(dir, 'missing.jsonl')], io), 2);
  t.match(io.stderr, /cannot read .*missing\.jsonl.*ENOENT/);
});

t.test('CLI: help and usage errors', async (t) => {
  let io = capture();
  t.equal(await runAuditCommand(['--help'], io), 0);
  t.match(io.stdout, /Usage: agentwrit-sidecar audit verify/);
  t.match(io.stdout, /cannot show: records removed from the END/);
  io = capture();
  t.equal(await runAuditCommand(['verify', '-h'], io), 0);
  for (const argv of [[], ['check', 'x'], ['verify'], ['verify', '-', 'a'], ['verify', '--nope', 'a']]) {
    io = capture();
    t.equal(await runAuditCommand(argv, io), 2, argv.join(' '));
    t.match(io.stderr, /Usage:/);
  }
});

t.test('a real file stream verifies the same as a buffer', async (t) => {
  const lines = await goodLog();
  const path = join(dir, 'stream.jsonl');
  await writeFile(path, `${lines.join('\n')}\n`);
  t.match(await verifyAuditStream(createReadStream(path)), { ok: true, records: 5 });
});

t.test('a long line arriving in many pieces is joined once: the work grows with its length, not its square', async (t) => {
  const piece = Buffer.alloc(64 * 1024, 0x61);
  const time = async (mib: number) => {
    const n = (mib * 1024 * 1024) / piece.length;
    const started = performance.now();
    const report = await verifyAuditStream(Readable.from((function* () {
      for (let i = 0; i < n; i++) yield piece;
    })()));
    const ms = performance.now() - started;
    t.match(report, { ok: false, firstBad: { line: 1, reason: /^incomplete last line/ } }, `${mib} MiB line: an incomplete last line`);
    return ms;
  };
  await time(2);
  // Best of three each, after a warm-up: the ratio tells linear from quadratic, not the times.
  const small = Math.min(await time(8), await time(8), await time(8));
  const large = Math.min(await time(32), await time(32), await time(32));
  // Four times the length: about 4x the time when linear, 16x when quadratic (as it was).
  t.ok(large / small < 9, `4x the length took ${(large / small).toFixed(1)}x the time (${small.toFixed(0)} ms, ${large.toFixed(0)} ms)`);
});
