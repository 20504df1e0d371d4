/**
 * `npm run demo`: a scripted scenario on the embedded default, one line per step with the HTTP
 * status and what it proves. Exits non-zero when any step does not behave as stated, so it doubles
 * as an end-to-end check.
 */
import { createReadStream } from 'node:fs';
import { ProxyAgent, request } from 'undici';
import { verifyAuditStream } from '../audit/verify.js';
import * as broker from '../broker/client.js';
import { noArgsProblem, parseArgs } from './args.js';
import { type DevEnvironment, startDevEnvironment } from './dev.js';
import { survivesClosedOutput } from './output.js';

interface StepResult {
  status: number | string;
  ok: boolean;
  note?: string;
}

const CEILING = ['read:billing:*', 'write:billing:*', 'read:customers:*'];

const DEMO_HELP =
  'Usage: agentwrit-sidecar demo\n\nRuns a scripted scenario on the embedded default (broker, sidecar, sample API on free loopback ports)\nand exits non-zero if any step does not behave as stated.\n';

export async function runDemoCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args.flags.has('help')) {
    process.stdout.write(DEMO_HELP);
    return 0;
  }
  const problem = noArgsProblem(args);
  if (problem !== undefined) {
    process.stderr.write(`agentwrit-sidecar demo: ${problem}\n\n${DEMO_HELP}`);
    return 2;
  }
  // `demo | head`: the scenario still runs to its end, and its files are removed.
  survivesClosedOutput(process.stdout);
  const env = await startDevEnvironment(['--broker-port', '0', '--proxy-port', '0', '--admin-port', '0', '--upstream-port', '0'], { logLevel: 'silent' });
  try {
    return await scenario(env);
  } finally {
    await env.close();
  }
}

async function scenario(env: DevEnvironment): Promise<number> {
  let failures = 0;
  let n = 0;
  const step = async (what: string, fn: () => Promise<StepResult>) => {
    n++;
    let r: StepResult;
    try {
      r = await fn();
    } catch (err) {
      r = { status: 'error', ok: false, note: (err as Error).message };
    }
    if (!r.ok) failures++;
    const status = String(r.status).padEnd(5);
    process.stdout.write(`${r.ok ? 'PASS' : 'FAIL'} ${String(n).padStart(2)}  ${status} ${what}${r.note ? ` — ${r.note}` : ''}\n`);
    return r;
  };
  const url = env.brokerUrl;
  const sidecar = async (token: string, path: string) => {
    const res = await request(`http://api.example.com${path}`, {
      dispatcher: new ProxyAgent({ uri: env.proxyUrl, token: `Bearer ${token}`, proxyTunnel: false }),
    });
    const text = await res.body.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      /* non-JSON bodies are reported by status only */
    }
    return { status: res.statusCode, body };
  };
  const refusedSoon = async (token: string, path: string) => {
    const until = Date.now() + 4000; // revalidateAfter is 2s in the embedded default
    let r = await sidecar(token, path);
    while (r.status === 200 && Date.now() < until) {
      await new Promise((res) => setTimeout(res, 100));
      r = await sidecar(token, path);
    }
    return r;
  };
  const brokerStatus = (err: unknown) => (err instanceof broker.BrokerHttpError ? err.status : 0);

  process.stdout.write(`agentwrit-sidecar demo — broker ${url}, sidecar ${env.proxyUrl}\n\n`);
  const admin = await broker.adminAuth(url, env.adminSecret);
  let app!: broker.CreatedApp;
  await step(`app "billing-assistant" registers with ceiling ${CEILING.join(', ')}`, async () => {
    app = await broker.createApp(url, admin.accessToken, { name: 'billing-assistant', scopes: CEILING });
    return { status: 201, ok: app.appId.startsWith('app-billing-assistant-') };
  });
  const appToken = (await broker.appAuth(url, app.clientId, app.clientSecret)).accessToken;
  const registerWith = async (taskId: string, scopes: string[]) => {
    const lt = await broker.createLaunchToken(url, appToken, { agentName: taskId, allowedScope: scopes }, 'app');
    return broker.registerAgent(url, { launchToken: lt.launchToken, orchId: 'billing-assistant', taskId, requestedScope: scopes });
  };
  let agentA!: broker.RegisteredAgent;
  await step('agent A registers for customer 12345 (read:billing:customer-12345)', async () => {
    agentA = await registerWith('invoice-12345', ['read:billing:customer-12345', 'read:customers:customer-12345']);
    return { status: 200, ok: agentA.agentId.startsWith('spiffe://') };
  });
  await step('A reads customer 12345 billing through the sidecar: upstream got the injected key, not the token', async () => {
    const r = await sidecar(agentA.accessToken, '/customers/12345/billing');
    const cred = String(r.body.received_credential ?? '');
    const ok = r.status === 200 && cred.startsWith('Bearer demo-billing-key') && r.body.agent_token_seen === false && !cred.includes(agentA.accessToken);
    return { status: r.status, ok, note: `upstream saw ${cred.slice(0, 22)}…` };
  });
  await step("A reads customer 67890's billing: refused, the token's scope names 12345 only", async () => {
    const r = await sidecar(agentA.accessToken, '/customers/67890/billing');
    return { status: r.status, ok: r.status === 403 && r.body.error_code === 'scope_violation', note: String(r.body.error_code) };
  });
  await step('A lists all customers: refused, that needs read:customers:*', async () => {
    const r = await sidecar(agentA.accessToken, '/customers');
    return { status: r.status, ok: r.status === 403 && r.body.error_code === 'scope_violation', note: String(r.body.error_code) };
  });
  await step('the app asks the broker for delete:accounts:customer-12345, above its ceiling: refused by the broker', async () => {
    try {
      await broker.createLaunchToken(url, appToken, { agentName: 'greedy', allowedScope: ['delete:accounts:customer-12345'] }, 'app');
      return { status: 201, ok: false, note: 'broker issued a launch token above the ceiling' };
    } catch (err) {
      return { status: brokerStatus(err), ok: brokerStatus(err) === 403 };
    }
  });
  let agentB!: broker.RegisteredAgent;
  let delegated = '';
  await step('A delegates read:billing:customer-12345 (narrower) to agent B, which reads it through the sidecar', async () => {
    agentB = await registerWith('helper-12345', ['read:customers:customer-12345']);
    const d = await broker.delegate(url, agentA.accessToken, { delegateTo: agentB.agentId, scope: ['read:billing:customer-12345'], ttl: 120 });
    delegated = d.accessToken;
    const r = await sidecar(delegated, '/customers/12345/billing');
    return { status: r.status, ok: r.status === 200 && d.delegationChain.length === 1, note: `delegation depth ${d.delegationChain.length}` };
  });
  await step('A tries to delegate read:billing:* (wider than it holds): refused by the broker', async () => {
    try {
      await broker.delegate(url, agentA.accessToken, { delegateTo: agentB.agentId, scope: ['read:billing:*'] });
      return { status: 200, ok: false, note: 'broker allowed widening' };
    } catch (err) {
      return { status: brokerStatus(err), ok: brokerStatus(err) === 403 };
    }
  });
  await step("A releases its token; the sidecar refuses A's next call within the revalidation window", async () => {
    await broker.release(url, agentA.accessToken);
    const r = await refusedSoon(agentA.accessToken, '/customers/12345/billing');
    return { status: r.status, ok: r.status === 401, note: String(r.body.error_code) };
  });
  await step("task-level revocation of A's task also cuts off B's delegated token", async () => {
    const fresh = await broker.adminAuth(url, env.adminSecret);
    await broker.revoke(url, fresh.accessToken, 'task', 'invoice-12345');
    const r = await refusedSoon(delegated, '/customers/12345/billing');
    return { status: r.status, ok: r.status === 401, note: String(r.body.error_code) };
  });
  await step('both audit chains verify: the sidecar log and the broker events', async () => {
    await new Promise((res) => setTimeout(res, 200)); // let the sidecar's writer flush its last batch
    const side = await verifyAuditStream(createReadStream(env.auditPath));
    const fresh = await broker.adminAuth(url, env.adminSecret);
    const events = await broker.allAuditEvents(url, fresh.accessToken);
    const chain = broker.verifyAuditChain(events);
    const ok = side.ok && chain.ok;
    return { status: ok ? 'ok' : 'bad', ok, note: `sidecar ${side.records} records, broker ${events.length} events` };
  });
  process.stdout.write(`\n${failures === 0 ? 'all steps behaved as stated' : `${failures} step(s) did not behave as stated`}\n`);
  return failures === 0 ? 0 : 1;
}
