/** Hot reload (good and bad), config_applied records, and the audit trail of real decisions. */
import { readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ProxyAgent, request } from 'undici';
import { stringify } from 'yaml';
import { verifyAuditStream } from '../../src/audit/verify.js';
import { runAuditCommand } from '../../src/cli/audit.js';
import { BILLING_POLICY, startTestSidecar } from '../helpers/sidecar.js';
import { makeKey, signToken } from '../helpers/tokens.js';
import { startUpstream } from '../helpers/upstream.js';
import { createReadStream } from 'node:fs';
import { tempDir } from '../helpers/tmp.js';

const key = await makeKey();
const upstream = await startUpstream();
t.teardown(() => upstream.close());

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

/** GETs http://api.example.com<path> through `proxyUrl` with a token of `scopes` (its agent closed at teardown). */
async function getterFor(t: Test, proxyUrl: string, scopes: string[]) {
  const tok = await signToken(key, { scope: scopes });
  const agent = new ProxyAgent({ uri: proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  t.teardown(() => agent.close());
  return async (p: string) => {
    const r = await request(`http://api.example.com${p}`, { dispatcher: agent });
    return { status: r.statusCode, text: await r.body.text() };
  };
}

/** A sidecar verifying offline with `key`, in a new directory that holds the key file and the audit log. */
async function offlineSidecar(prefix: string, audit: Record<string, unknown> = {}) {
  const dir = tempDir(prefix);
  const keyFile = join(dir, 'broker-public.pem');
  writeFileSync(keyFile, key.publicPem);
  const sc = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: { verify: 'offline', publicKeyFile: keyFile },
    dir,
    config: { audit: { path: join(dir, 'audit.jsonl'), flushInterval: '5ms', ...audit } },
  });
  return { dir, keyFile, sc };
}

t.test('reload through a Kubernetes-style ..data symlink swap; a bad policy keeps the last good one', async (t) => {
  const base = tempDir('aws-reload-');
  // The layout a ConfigMap volume has: files are symlinks into ..data, which points at a timestamped dir.
  const v1 = join(base, '..v1');
  mkdirSync(v1);
  writeFileSync(join(v1, 'policy.yaml'), stringify(BILLING_POLICY));
  symlinkSync('..v1', join(base, '..data'));
  symlinkSync('..data/policy.yaml', join(base, 'policy.yaml'));
  const keyFile = join(base, 'key.pem');
  writeFileSync(keyFile, key.publicPem);
  const sc = await startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', publicKeyFile: keyFile }, config: { policies: [base] }, policies: [] });
  t.teardown(() => sc.close());
  const tok = await signToken(key, { scope: ['read:billing:customer-12345', 'read:accounts:a1'] });
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  const get = async (p: string) => (await request(`http://api.example.com${p}`, { dispatcher: agent })).statusCode;

  t.equal(await get('/accounts/a1'), 403, 'route not there yet');
  const v2 = join(base, '..v2');
  mkdirSync(v2);
  const next = structuredClone(BILLING_POLICY) as typeof BILLING_POLICY & { routes: unknown[] };
  next.routes.push({ id: 'accounts', host: 'api.example.com', methods: ['GET'], path: '/accounts/{a}', scopes: ['read:accounts:{a}'] });
  writeFileSync(join(v2, 'policy.yaml'), stringify(next));
  symlinkSync('..v2', join(base, '..data_tmp'));
  renameSync(join(base, '..data_tmp'), join(base, '..data'));
  t.ok(await waitFor(async () => (await get('/accounts/a1')) === 200), 'new route served after the swap');
  t.equal(sc.runtime.generation()?.id, 2);

  // A broken policy: the reload fails, generation 2 stays in service.
  const v3 = join(base, '..v3');
  mkdirSync(v3);
  writeFileSync(join(v3, 'policy.yaml'), 'version: v1\nroutes:\n  - id: x\n    bogus: true\n');
  symlinkSync('..v3', join(base, '..data_tmp'));
  renameSync(join(base, '..data_tmp'), join(base, '..data'));
  t.ok(
    await waitFor(async () => {
      const m = await (await request(`${sc.adminUrl}/metrics`)).body.text();
      return /agentwrit_sidecar_policy_reloads_total\{result="failure"\} [1-9]/.test(m);
    }),
    'failure counted',
  );
  t.equal(sc.runtime.generation()?.id, 2, 'last good generation kept');
  t.equal(await get('/accounts/a1'), 200, 'still serving generation 2');
  t.ok(sc.logs.some((l) => l.includes('policy reload failed')), 'failure logged');
  const bad = await request(`${sc.adminUrl}/reload`, { method: 'POST' });
  t.equal(bad.statusCode, 422);
  const answer = (await bad.body.json()) as { reloaded: boolean; generation: number; problems: string[] };
  t.match(answer, { reloaded: false, generation: 2 });
  t.match(answer.problems.join('\n'), /policy\.yaml:\d+:\d+ .*bogus/, 'the answer says what is wrong, where');
});

t.test('a route a reload removes: its metric series go, the other routes keep theirs', async (t) => {
  const { sc } = await offlineSidecar('aws-reload-series-');
  t.teardown(() => sc.close());
  const withAccounts = structuredClone(BILLING_POLICY) as typeof BILLING_POLICY & { routes: unknown[] };
  withAccounts.routes.push({ id: 'accounts', host: 'api.example.com', methods: ['GET'], path: '/accounts/{a}', scopes: ['read:accounts:{a}'] });
  const policyFile = join(sc.dir, 'policies', 'policy-0.yaml');
  writeFileSync(policyFile, stringify(withAccounts));
  t.equal((await request(`${sc.adminUrl}/reload`, { method: 'POST' })).statusCode, 200);
  const fetchVia = await getterFor(t, sc.proxyUrl, ['read:billing:customer-12345', 'read:accounts:a1']);
  const get = async (p: string) => (await fetchVia(p)).status;
  t.equal(await get('/accounts/a1'), 200);
  t.equal(await get('/customers/12345/billing'), 200);
  const metrics = async () => (await request(`${sc.adminUrl}/metrics`)).body.text();
  const before = await metrics();
  t.match(before, /^agentwrit_sidecar_requests_total\{route="accounts",decision="allow",code="ok"\} 1$/m);
  t.match(before, /^agentwrit_sidecar_upstream_duration_seconds_count\{route="accounts"\} 1$/m);

  writeFileSync(policyFile, stringify(BILLING_POLICY));
  t.equal((await request(`${sc.adminUrl}/reload`, { method: 'POST' })).statusCode, 200);
  const after = await metrics();
  t.notMatch(after, /route="accounts"/, 'no series of the removed route');
  t.match(after, /^agentwrit_sidecar_requests_total\{route="billing-read",decision="allow",code="ok"\} 1$/m, 'the remaining route keeps its count');
  t.match(after, /^agentwrit_sidecar_request_duration_seconds_count\{route="billing-read",decision="allow"\} 1$/m);
  t.equal(await get('/accounts/a1'), 403);
  t.match(await metrics(), /^agentwrit_sidecar_requests_total\{route="none",decision="deny",code="no_route"\} 1$/m, 'refusals without a route are counted as before');
});

t.test('a replaced broker key file: new tokens served, old ones refused, counted and logged', async (t) => {
  const { keyFile, sc } = await offlineSidecar('aws-keyswap-');
  t.teardown(() => sc.close());
  const nextKey = await makeKey();
  const scope = ['read:billing:customer-12345'];
  const [oldTok, newTok] = [await signToken(key, { scope }), await signToken(nextKey, { scope })];
  const get = async (tok: string) => {
    const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
    try {
      return (await request('http://api.example.com/customers/12345/billing', { dispatcher: agent })).statusCode;
    } finally {
      await agent.close();
    }
  };
  t.equal(await get(oldTok), 200);
  t.equal(await get(newTok), 401, 'the next key is not trusted yet');

  writeFileSync(`${keyFile}.tmp`, nextKey.publicPem);
  renameSync(`${keyFile}.tmp`, keyFile);
  t.ok(await waitFor(async () => (await get(newTok)) === 200), 'a token of the new key is served');
  t.equal(await get(oldTok), 401, 'a token of the replaced key is refused, though it was verified before');
  const m = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  t.match(m, /agentwrit_sidecar_key_reloads_total\{result="success"\} 1\n/);
  const line = sc.logs.find((l) => l.includes('broker key file changed'));
  t.ok(line, 'the change is logged');
  t.match(JSON.parse(line ?? '{}'), { level: 'info', file: keyFile, kids: [nextKey.kid] });
});

t.test('audit: one record per decision, config_applied first, chain verifies, tampering detected', async (t) => {
  const { dir, sc } = await offlineSidecar('aws-audit-');
  const tok = await signToken(key, { scope: ['read:billing:customer-12345'], task_id: 'task-audit' });
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  t.equal((await request('http://api.example.com/customers/12345/billing', { dispatcher: agent })).statusCode, 200);
  t.equal((await request('http://api.example.com/customers/999/billing', { dispatcher: agent })).statusCode, 403);
  await sc.close();
  const lines = readFileSync(sc.auditPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines[0].type, 'config_applied');
  t.match(lines[0].policy_digest, /^[0-9a-f]{64}$/);
  const reqs = lines.filter((l) => l.type === 'request');
  t.equal(reqs.length, 2);
  t.match(reqs[0], { decision: 'allow', route: 'billing-read', path_template: '/customers/{customer}/billing', task_id: 'task-audit', connector: 'billing-api', upstream_status: 200, scopes: ['read:billing:customer-12345'] });
  t.match(reqs[1], { decision: 'deny', error_code: 'scope_violation' });
  t.notOk(JSON.stringify(lines).includes('/customers/12345/billing?'), 'raw path not recorded by default');
  t.notOk(JSON.stringify(lines).includes(tok), 'no token in audit');
  const ok = await verifyAuditStream(createReadStream(sc.auditPath));
  t.equal(ok.ok, true);
  t.equal(ok.records, lines.length);
  const edited = lines.map((l) => JSON.stringify(l));
  edited[1] = edited[1].replace('"allow"', '"deny"');
  const tampered = join(dir, 'tampered.jsonl');
  writeFileSync(tampered, `${edited.join('\n')}\n`);
  const bad = await verifyAuditStream(createReadStream(tampered));
  t.equal(bad.ok, false);
  t.equal(bad.firstBad?.line, 2);
});

t.test('audit rotation in a running sidecar: every decision kept, the files verify as one chain', async (t) => {
  const { dir, sc } = await offlineSidecar('aws-auditrot-', { rotateBytes: 4000, rotateKeep: 20 });
  const tok = await signToken(key, { scope: ['read:billing:customer-12345'] });
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) {
    const r = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
    await r.body.dump();
    ids.push(r.headers['x-request-id'] as string);
    await new Promise((r) => setTimeout(r, 10)); // let batches reach the file one by one
  }
  await agent.close();
  await sc.close();
  const files = readdirSync(dir)
    .filter((f) => /^audit\.jsonl(\.\d+)?$/.test(f))
    .sort((a, b) => Number(b.split('.')[2] ?? 0) - Number(a.split('.')[2] ?? 0))
    .map((f) => join(dir, f));
  t.ok(files.length >= 3, `rotated into ${files.length} files`);
  const records = files.flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>));
  t.same(records.filter((r) => r.type === 'request').map((r) => r.request_id), ids, 'every decision, in order, across the files');
  let out = '';
  const code = await runAuditCommand(['verify', ...files], { out: (s) => (out += s), err: (s) => (out += s) });
  t.equal(code, 0, out);
  t.match(out, `ok: ${records.length} records, chain intact`);
});

t.test('audit fail-closed: an unwritable audit log refuses requests with 503', async (t) => {
  const { sc } = await offlineSidecar('aws-auditfail-');
  t.teardown(() => sc.close());
  const tok = await signToken(key, { scope: ['read:billing:customer-12345'] });
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  t.equal((await request('http://api.example.com/customers/12345/billing', { dispatcher: agent })).statusCode, 200);
  // Fault injection: the sink's writes start failing.
  const sink = sc.runtime.audit as unknown as { healthy(): boolean };
  const realHealthy = sink.healthy.bind(sink);
  sink.healthy = () => false;
  const res = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
  t.equal(res.statusCode, 503);
  t.equal(((await res.body.json()) as { error_code: string }).error_code, 'audit_unavailable');
  sink.healthy = realHealthy;
  t.equal((await request('http://api.example.com/customers/12345/billing', { dispatcher: agent })).statusCode, 200);
});

t.test('another writer taking the audit lock: the sidecar stops writing and refuses requests (fail closed)', async (t) => {
  const { dir, sc } = await offlineSidecar('aws-lostlock-');
  const tok = await signToken(key, { scope: ['read:billing:customer-12345'] });
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${tok}`, proxyTunnel: false });
  t.teardown(() => agent.close());
  const get = async () => {
    const r = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
    return { status: r.statusCode, body: (await r.body.text()) as string };
  };
  t.equal((await get()).status, 200);
  writeFileSync(join(dir, '.audit.jsonl.lock'), '{"pid":4242,"host":"other-pod","since":"x"}\n');
  t.ok(await waitFor(async () => (await get()).status === 503, 5000), 'refused once the lock is seen to be lost (refresh every 2 s)');
  await new Promise((r) => setTimeout(r, 100));
  const before = readFileSync(sc.auditPath, 'utf8');
  for (let i = 0; i < 3; i++) t.match(JSON.parse((await get()).body), { error_code: 'audit_unavailable' });
  t.equal((await request(`${sc.adminUrl}/readyz`)).statusCode, 503, 'not ready');
  const line = sc.logs.find((l) => l.includes('audit log lock lost'));
  t.match(JSON.parse(line ?? '{}'), { level: 'error', reason: /another writer holds it now \(pid 4242 on other-pod/ });
  await t.rejects(sc.close(), /audit: writing stopped/);
  await t.rejects(request(`${sc.adminUrl}/healthz`), 'everything else closed all the same');
  t.ok(sc.logs.some((l) => l.includes('"sidecar stopped"')));
  const after = readFileSync(sc.auditPath, 'utf8');
  t.equal(after, before, 'nothing more written to the other writer’s log, not even at shutdown');
  t.equal(readFileSync(join(dir, '.audit.jsonl.lock'), 'utf8'), '{"pid":4242,"host":"other-pod","since":"x"}\n', "the other writer's lock is left");
});

t.test('a start that fails after the audit log is open releases its lock', async (t) => {
  const dir = tempDir('aws-failstart-');
  await t.rejects(
    startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', publicKeyFile: join(dir, 'missing.pem') }, dir }),
    /broker\.publicKeyFile .*missing\.pem cannot be read: ENOENT/,
  );
  t.same(
    readdirSync(dir).filter((f) => f.includes('lock')),
    [],
    'no lock left behind',
  );
});

t.test("a reload that leaves a connector as it was does not fail because that connector's secret is unusable for the moment", async (t) => {
  const dir = tempDir('aws-reload-keep-');
  const keyFile = join(dir, 'k.pem');
  writeFileSync(keyFile, key.publicPem);
  const secretFile = join(dir, 'billing.key');
  writeFileSync(secretFile, 'key-v1\n');
  const policy = (extraPath?: string) => ({
    version: 'v1',
    connectors: [{ name: 'billing-api', type: 'static', secret: { file: secretFile } }],
    routes: [
      { id: 'billing-read', host: 'api.example.com', methods: ['GET'], path: '/customers/{customer}/billing', scopes: ['read:billing:customer-{customer}'], connector: 'billing-api' },
      ...(extraPath ? [{ id: 'extra', host: 'api.example.com', methods: ['GET'], path: extraPath, scopes: ['read:billing:customer-{customer}'], connector: 'billing-api' }] : []),
    ],
  });
  const sc = await startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', publicKeyFile: keyFile }, dir, policies: [policy()] });
  t.teardown(() => sc.close());
  const get = await getterFor(t, sc.proxyUrl, ['read:billing:customer-12345']);
  t.equal((await get('/customers/12345/billing')).status, 200);
  // The secret is being rotated: empty for a moment (its requests get 503 meanwhile).
  writeFileSync(secretFile, '');
  writeFileSync(join(sc.dir, 'policies', 'policy-0.yaml'), stringify(policy('/customers/{customer}/invoices')));
  const answer = await request(`${sc.adminUrl}/reload`, { method: 'POST' });
  t.equal(answer.statusCode, 200, 'the reload applies');
  t.match(await answer.body.json(), { reloaded: true, generation: 2 });
  writeFileSync(secretFile, 'key-v2\n');
  await new Promise((r) => setTimeout(r, 1100));
  const invoices = await get('/customers/12345/invoices');
  t.equal(invoices.status, 200, 'the new route serves');
  t.match(JSON.parse(invoices.text), { headers: { authorization: 'key-v2' } }, 'with the renewed secret');
});

for (const how of ['a symlink to it swapped', 'renamed over'] as const) {
  t.test(`a policy directory replaced (${how}) is watched from then on`, async (t) => {
    const base = tempDir('aws-reload-dirswap-');
    const keyFile = join(base, 'key.pem');
    writeFileSync(keyFile, key.publicPem);
    const withAccounts = structuredClone(BILLING_POLICY) as typeof BILLING_POLICY & { routes: unknown[] };
    withAccounts.routes.push({ id: 'accounts', host: 'api.example.com', methods: ['GET'], path: '/accounts/{a}', scopes: ['read:accounts:{a}'] });
    const current = join(base, 'current');
    const v1 = join(base, 'v1');
    mkdirSync(v1);
    writeFileSync(join(v1, 'policy.yaml'), stringify(BILLING_POLICY));
    if (how === 'a symlink to it swapped') symlinkSync('v1', current);
    else renameSync(v1, current);
    const sc = await startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', publicKeyFile: keyFile }, config: { policies: [current] }, policies: [] });
    t.teardown(() => sc.close());
    const fetchVia = await getterFor(t, sc.proxyUrl, ['read:billing:customer-12345', 'read:accounts:a1']);
    const get = async (p: string) => (await fetchVia(p)).status;
    t.equal(await get('/accounts/a1'), 403);
    const v2 = join(base, 'v2');
    mkdirSync(v2);
    writeFileSync(join(v2, 'policy.yaml'), stringify(withAccounts));
    if (how === 'a symlink to it swapped') {
      symlinkSync('v2', join(base, 'current.tmp'));
      renameSync(join(base, 'current.tmp'), current);
    } else {
      renameSync(current, join(base, 'old'));
      renameSync(v2, current);
    }
    t.ok(await waitFor(async () => (await get('/accounts/a1')) === 200), 'the new directory applied');
    // An edit inside the new directory is seen too.
    writeFileSync(join(current, 'policy.yaml'), stringify(BILLING_POLICY));
    t.ok(await waitFor(async () => (await get('/accounts/a1')) === 403), 'an edit in it applied');
    t.equal(sc.runtime.generation()?.id, 3);
  });
}
