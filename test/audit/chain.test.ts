import { createHash } from 'node:crypto';
import t from 'tap';
import { canonicalJson, chainPrepared, checkLine, GENESIS_HASH, prepareRecord, RECORD_ORDER } from '../../src/audit/chain.js';
import type { AuditEvent } from '../../src/audit/types.js';

const sha = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

const full: AuditEvent = {
  type: 'request',
  time: '2025-01-02T03:04:05.678Z',
  request_id: 'req-1',
  sub: 'spiffe://agentwrit.local/agent/o/t/i',
  jti: 'j1',
  task_id: 'task "quoted" \\ back',
  orch_id: 'orch-ü-😀',
  deleg_depth: 1,
  chain_root: 'spiffe://root',
  route: 'billing-read',
  method: 'GET',
  host: 'api.example.com',
  path_template: '/customers/{customer}/billing',
  raw_path: '/customers/1?x=\u0001',
  scopes: ['read:billing:customer-1', 'write:x:y'],
  decision: 'allow',
  error_code: 'none',
  connector: 'billing-api',
  upstream_status: 200,
  duration_ms: 1.25,
  bytes_in: 0,
  bytes_out: 1e21,
  generation: 3,
  policy_digest: 'abc',
};

t.test('canonical JSON: sorted keys at every level, no whitespace, undefined omitted', async (t) => {
  t.equal(canonicalJson({ b: 1, a: [3, { d: true, c: null }], z: undefined, A: 'x' }), '{"A":"x","a":[3,{"c":null,"d":true}],"b":1}');
  t.equal(canonicalJson('line\nbreak "q"'), '"line\\nbreak \\"q\\""');
  t.equal(canonicalJson([]), '[]');
  t.equal(canonicalJson({}), '{}');
  t.throws(() => canonicalJson({ n: Number.NaN }), /non-finite/);
  t.throws(() => canonicalJson({ n: Number.POSITIVE_INFINITY }), /non-finite/);
  t.throws(() => canonicalJson({ f: () => 1 }), /cannot serialize/);
});

t.test('the fast record path writes exactly the canonical form, with hash last', async (t) => {
  for (const ev of [full, { type: 'config_applied', time: 't', generation: 1, policy_digest: 'd' } as AuditEvent]) {
    const rec = prepareRecord(ev);
    const { line, hash } = chainPrepared(rec, 7, 'ab'.repeat(32));
    t.ok(line.endsWith(`,"hash":"${hash}"}\n`));
    const parsed = JSON.parse(line);
    const { hash: h, ...body } = parsed;
    t.equal(h, hash);
    t.same(body, { ...ev, seq: 7, prev_hash: 'ab'.repeat(32) });
    // The hash covers the line without its hash member, which is the canonical text.
    const stripped = line.replace(/,"hash":"[0-9a-f]{64}"\}\n$/, '}');
    t.equal(stripped, canonicalJson(body));
    t.equal(sha(stripped), hash);
    t.same(checkLine(line.slice(0, -1)), { ok: true, seq: 7, hash, prevHash: 'ab'.repeat(32) });
  }
});

t.test('the fast record text equals canonical JSON for hostile strings and numbers', async (t) => {
  // Quotes, backslashes, every control character, DEL, U+2028/9, lone and paired surrogate halves.
  const alphabet = ['a', 'Z', '"', '\\', '/', '\u007f', '\u2028', '\u2029', 'ü', '\ud83d', '\ude00', '😀', '\ufffe'];
  for (let c = 0; c < 0x20; c++) alphabet.push(String.fromCharCode(c));
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  // Each string mixes plain letters with at most two of the hostile characters, so every one of
  // them is met both alone and beside others.
  const str = () => {
    const pick = ['x', alphabet[rand(alphabet.length)], alphabet[rand(alphabet.length)]];
    return Array.from({ length: rand(12) }, () => pick[rand(3)]).join('');
  };
  const nums = [0, -0, 1.25, 1e21, 1e-7, -3, 2 ** 53, 0.1 + 0.2, Number.NaN, Number.POSITIVE_INFINITY];
  const numberFields = new Set(['bytes_in', 'bytes_out', 'deleg_depth', 'duration_ms', 'generation', 'port', 'upstream_status']);
  const fields = RECORD_ORDER.filter((k) => k !== 'seq' && k !== 'prev_hash');
  // Any field may be missing or of the wrong type; the record keeps what has the right type.
  const value = (k: string): unknown => {
    const r = rand(6);
    if (r === 0) return undefined;
    if (r === 1) return nums[rand(nums.length)];
    if (r === 2) return k === 'scopes' ? [str(), 7, str()] : str();
    if (r === 3) return { x: str() };
    return numberFields.has(k) ? nums[rand(nums.length)] : k === 'scopes' ? [str(), str()] : str();
  };
  const kept = (k: string, v: unknown): unknown => {
    if (numberFields.has(k)) return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
    if (k === 'scopes') return Array.isArray(v) ? v.filter((x) => typeof x === 'string') : undefined;
    return typeof v === 'string' ? v : undefined;
  };
  for (let i = 0; i < 2000; i++) {
    const ev: Record<string, unknown> = {};
    for (const k of fields) ev[k] = value(k);
    if (typeof ev.time !== 'string' || ev.time === '') ev.time = 't';
    const { line, hash } = chainPrepared(prepareRecord(ev as unknown as AuditEvent), i + 1, GENESIS_HASH);
    const body: Record<string, unknown> = { seq: i + 1, prev_hash: GENESIS_HASH };
    for (const k of fields) body[k] = kept(k, ev[k]);
    const expected = canonicalJson(body);
    if (line !== `${expected.slice(0, -1)},"hash":"${sha(expected)}"}\n` || hash !== sha(expected)) {
      // ASCII only: a raw U+2028 in a test name confuses the TAP stream.
      t.fail(`record ${i} differs from canonical JSON; event (base64): ${Buffer.from(JSON.stringify(ev)).toString('base64')}`);
      return;
    }
  }
  t.pass('2000 random records written exactly as canonical JSON');
});

t.test('records carry only known, well-typed fields', async (t) => {
  const sneaky = {
    type: 'request',
    time: '',
    token: 'eyJ-secret-token',
    authorization: 'Bearer x',
    sub: 42,
    duration_ms: Number.NaN,
    bytes_in: Number.POSITIVE_INFINITY,
    scopes: ['ok', 7, { secret: 1 }],
    route: 'r',
  } as unknown as AuditEvent;
  const { line } = chainPrepared(prepareRecord(sneaky), 1, GENESIS_HASH);
  const rec = JSON.parse(line);
  t.notOk('token' in rec);
  t.notOk('authorization' in rec);
  t.notOk('sub' in rec, 'a field of the wrong type is left out');
  t.notOk('duration_ms' in rec);
  t.notOk('bytes_in' in rec);
  t.same(rec.scopes, ['ok']);
  t.match(rec.time, /^\d{4}-\d\d-\d\dT/, 'missing time is filled');
  t.notOk(line.includes('secret'));
});

t.test('the caller may reuse its event object', async (t) => {
  const ev: AuditEvent = { type: 'request', time: 't', scopes: ['a'], route: 'one' };
  const rec = prepareRecord(ev);
  ev.route = 'two';
  ev.scopes!.push('b');
  t.same(JSON.parse(chainPrepared(rec, 1, GENESIS_HASH).line).scopes, ['a']);
  t.equal(JSON.parse(chainPrepared(rec, 1, GENESIS_HASH).line).route, 'one');
});

t.test('checkLine refuses what other JSON readers could read differently', async (t) => {
  const { line } = chainPrepared(prepareRecord({ type: 'request', time: 't', decision: 'deny' }), 1, GENESIS_HASH);
  const l = line.slice(0, -1);
  t.match(checkLine('nope'), { ok: false, reason: 'not JSON' });
  t.match(checkLine('[1]'), { ok: false, reason: 'not a JSON object' });
  t.match(checkLine('{"seq":0}'), { ok: false, reason: /seq/ });
  t.match(checkLine(l.replace('"hash":"', '"hash":"x')), { ok: false, seq: 1, reason: /malformed hash/ });
  t.match(checkLine(l.replace('{', '{"decision":"allow",')), { ok: false, reason: /canonical/ }, 'duplicate key, first one differs');
  t.match(checkLine(l.replace(',"seq"', ', "seq"')), { ok: false, reason: /canonical/ }, 'extra whitespace');
  t.match(checkLine(l.replace('"deny"', '"\\u0064eny"')), { ok: false, reason: /canonical/ }, 're-escaped string');
  t.match(checkLine(l.replace('"deny"', '"allow"')), { ok: false, seq: 1, reason: /hash mismatch/ });
});
