/**
 * Every decision carried out has its audit record, also when the log was slow or failing after the
 * request was let through, when a generation is applied meanwhile, or when a tunnel is still open at
 * shutdown; what is lost (a refusal's record while failing, open mode past maxQueue) is counted in
 * agentwrit_sidecar_audit_records_lost_total. Faults are injected into the running sink's file
 * output: a slow write, or ENOSPC for a while.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ProxyAgent, request } from 'undici';
import { stringify } from 'yaml';
import { BILLING_POLICY, startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { tempDir } from '../helpers/tmp.js';
import { makeKey, signToken } from '../helpers/tokens.js';
import { startUpstream } from '../helpers/upstream.js';

const key = await makeKey();
const upstream = await startUpstream();
t.teardown(() => upstream.close());
// Answers late: every request of a burst is let through before the first of their records is appended.
upstream.handlers.set('/customers/', (_req, res) => setTimeout(() => res.end('{}'), 150));
const token = await signToken(key, { scope: ['read:billing:customer-12345', 'tunnel:echo:all'] });

type Fault = { slowMs: number; broken: boolean };

/** A sidecar whose audit file output can be made slow or failing (fault injection). */
async function sidecar(config: Record<string, unknown> = {}, policies?: Record<string, unknown>[]): Promise<{ sc: TestSidecar; fault: Fault }> {
  const dir = tempDir('aws-served-');
  const keyFile = join(dir, 'k.pem');
  writeFileSync(keyFile, key.publicPem);
  const sc = await startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', publicKeyFile: keyFile }, dir, policies, config });
  await sc.runtime.audit.flush();
  const fault: Fault = { slowMs: 0, broken: false };
  const out = (sc.runtime.audit as unknown as { out: { write: (b: Buffer, o: number) => Promise<number> } }).out;
  const write = out.write;
  out.write = async (b, o) => {
    if (fault.slowMs > 0) await new Promise((r) => setTimeout(r, fault.slowMs));
    if (fault.broken) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    return write(b, o);
  };
  return { sc, fault };
}

const records = (sc: TestSidecar) =>
  readFileSync(sc.auditPath, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

async function lostMetric(sc: TestSidecar): Promise<number> {
  const text = await (await request(`${sc.adminUrl}/metrics`)).body.text();
  return Number(/^agentwrit_sidecar_audit_records_lost_total (\d+)$/m.exec(text)?.[1]);
}

function agentOf(t: Test, sc: TestSidecar, connections = 20) {
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${token}`, proxyTunnel: false, connections });
  t.teardown(() => agent.close());
  return async () => {
    const r = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
    await r.body.dump();
    return r.statusCode;
  };
}

/** A record (a refusal: no token) that cannot be written: the sink fails from then on. */
async function failOnce(sc: TestSidecar): Promise<void> {
  const r = await request(`${sc.proxyUrl}/no-token`);
  await r.body.dump();
  await sc.runtime.audit.flush().catch(() => {});
  if (sc.runtime.audit.healthy()) throw new Error('the sink should be failing');
}

t.test('closed mode, a slow disk and a burst past maxQueue: every request served has its record', async (t) => {
  const { sc, fault } = await sidecar({ audit: { maxQueue: 5, flushInterval: '5ms' } });
  fault.slowMs = 300;
  const get = agentOf(t, sc);
  const statuses = await Promise.all(Array.from({ length: 20 }, get));
  t.same(statuses, Array(20).fill(200));
  t.equal(await lostMetric(sc), 0, 'nothing lost');
  await sc.close();
  t.equal(records(sc).filter((r) => r.type === 'request' && r.decision === 'allow').length, 20, 'twenty records, written once the disk caught up');
});

t.test('open mode past maxQueue: the records lost are counted', async (t) => {
  const { sc, fault } = await sidecar({ audit: { onFailure: 'open', maxQueue: 5, flushInterval: '5ms' } });
  fault.slowMs = 300;
  const get = agentOf(t, sc);
  t.same(await Promise.all(Array.from({ length: 20 }, get)), Array(20).fill(200));
  const lost = await lostMetric(sc);
  await sc.close();
  const written = records(sc).filter((r) => r.type === 'request').length;
  t.ok(lost > 0, `some were lost (${lost})`);
  t.equal(written + lost, 20, 'each request either written or counted as lost');
});

t.test('closed mode, writes failing for a while: requests let through before have their records; refusals meanwhile are counted', async (t) => {
  const { sc, fault } = await sidecar();
  const get = agentOf(t, sc);
  const before = Array.from({ length: 5 }, get); // let through while the log is healthy
  await new Promise((r) => setTimeout(r, 50));
  fault.broken = true;
  await failOnce(sc);
  t.equal(await get(), 503, 'refused while the log cannot be written');
  await new Promise((r) => setTimeout(r, 300)); // the five get their answers meanwhile
  fault.broken = false;
  const statuses = await Promise.all(before);
  t.same(statuses, Array(5).fill(200));
  t.ok((await lostMetric(sc)) >= 1, "the refusal's record is counted as lost");
  await sc.close();
  t.equal(records(sc).filter((r) => r.type === 'request' && r.decision === 'allow').length, 5, 'the five served have their records');
});

t.test('a generation applied while the log fails has its config_applied record once the log recovers', async (t) => {
  const { sc, fault } = await sidecar();
  fault.broken = true;
  await failOnce(sc);
  const next = structuredClone(BILLING_POLICY);
  (next.routes[0] as { methods: string[] }).methods = ['GET', 'HEAD'];
  writeFileSync(join(sc.dir, 'policies', 'policy-0.yaml'), stringify(next));
  t.equal(await sc.reload('test'), true, 'generation 2 applied');
  fault.broken = false;
  await sc.close();
  t.match(
    records(sc).filter((r) => r.type === 'config_applied'),
    [{ generation: 1 }, { generation: 2 }],
  );
});

t.test('a pass-through tunnel open at shutdown is ended and its tunnel_closed record written', async (t) => {
  const echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => echo.close());
  const port = (echo.address() as { port: number }).port;
  const { sc } = await sidecar({ upstream: { connectTo: { 'echo.example.com:443': `127.0.0.1:${port}` } }, shutdown: { grace: '200ms' } }, [
    { version: 'v1', passThrough: [{ host: 'echo.example.com', port: 443, scopes: ['tunnel:echo:all'] }], routes: [] },
  ]);
  const sock = connect(sc.proxyPort, '127.0.0.1');
  sock.on('error', () => {});
  sock.write(`CONNECT echo.example.com:443 HTTP/1.1\r\nHost: echo.example.com:443\r\nProxy-Authorization: Bearer ${token}\r\n\r\n`);
  await new Promise((r) => sock.once('data', r));
  const started = Date.now();
  await sc.close();
  t.ok(Date.now() - started < 1500, 'without waiting for the tunnel to linger out');
  t.match(records(sc).filter((r) => r.type === 'tunnel_closed'), [{ outcome: 'passed_through', close_reason: 'shutdown' }]);
  sock.destroy();
});
