/**
 * AA_SEED_TOKENS: the broker's development bootstrap. A launch token for `*:*:*` (literal
 * wildcards, so it admits only `*:*:<id>` scopes), single use, one hour; an admin token with the
 * three admin scopes, one hour, never an `aud`.
 */
import { spawn } from 'node:child_process';
import t from 'tap';
import { BrokerHttpError, registerAgent, validate } from '../../src/broker/client.js';
import type { RunningBroker } from '../../src/broker/index.js';
import { runBrokerCommand } from '../../src/cli/broker.js';
import { capture, http, withBroker } from './fixture.js';

function payload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

async function registerStatus(url: string, launchToken: string, scope: string): Promise<number> {
  try {
    await registerAgent(url, { launchToken, orchId: 'o', taskId: 't', requestedScope: [scope] });
    return 200;
  } catch (e) {
    if (e instanceof BrokerHttpError) return e.status;
    throw e;
  }
}

t.test('the seed launch token: *:*:* is literal, one use, max_ttl 3600', async (t) => {
  const b = await withBroker(t, { seedTokens: true });
  const seed = b.seed;
  if (!seed) throw new Error('no seed tokens');
  t.match(seed.launchToken, /^[0-9a-f]{64}$/);
  t.equal(await registerStatus(b.url, seed.launchToken, 'read:billing:customer-1'), 403, 'a concrete action is not covered by the literal *');
  const agent = await registerAgent(b.url, { launchToken: seed.launchToken, orchId: 'o', taskId: 't', requestedScope: ['*:*:job-7'] });
  t.equal(agent.expiresIn, 3600);
  t.same(payload(agent.accessToken).scope, ['*:*:job-7']);
  t.equal(await registerStatus(b.url, seed.launchToken, '*:*:job-8'), 401, 'consumed after one registration');
});

t.test('the seed admin token: admin scopes, one hour, no aud, recorded by the audit trail', async (t) => {
  const b = await withBroker(t, { seedTokens: true });
  const admin = b.seed?.adminToken ?? '';
  const claims = payload(admin);
  t.equal(claims.sub, 'admin');
  t.same(claims.scope, ['admin:launch-tokens:*', 'admin:revoke:*', 'admin:audit:*']);
  t.equal((claims.exp as number) - (claims.iat as number), 3600);
  t.notOk('aud' in claims);
  t.same((await validate(b.url, admin)).valid, true);
  const events = await http(b.url, 'GET', '/v1/audit/events?event_type=launch_token_issued', { token: admin });
  t.equal(events.status, 200);
  t.match(events.json.events[0].detail, /name=seed-agent scope=\[\*:\*:\*\] max_ttl=3600 created_by=seed/);
});

t.test('with an audience configured the seed admin token is refused by Bearer endpoints, as in the broker', async (t) => {
  const b = await withBroker(t, { seedTokens: true, audience: 'agentwrit' });
  const r = await http(b.url, 'GET', '/v1/audit/events', { token: b.seed?.adminToken });
  t.equal(r.status, 401);
});

t.test('no seed tokens unless asked', async (t) => {
  const b = await withBroker(t);
  t.equal(b.seed, undefined);
});

async function runOnce(argv: string[], env: NodeJS.ProcessEnv): Promise<{ out: string; err: string; broker: RunningBroker }> {
  const out = capture();
  const err = capture();
  let stop!: () => void;
  const stopped = new Promise<void>((r) => {
    stop = r;
  });
  let broker!: RunningBroker;
  const exit = runBrokerCommand(['--listen', '127.0.0.1:0', '--log-level', 'silent', ...argv], {
    stdout: out.stream,
    stderr: err.stream,
    env: { AA_ADMIN_SECRET: 'seed-test-secret', ...env },
    stop: stopped,
    onReady: (b) => {
      broker = b;
      stop();
    },
  });
  if ((await exit) !== 0) throw new Error(`broker exited: ${err.text()}`);
  return { out: out.text(), err: err.text(), broker };
}

t.test('the command prints the seed lines for AA_SEED_TOKENS=true or --seed-tokens, and only then', async (t) => {
  const fromEnv = await runOnce([], { AA_SEED_TOKENS: 'true' });
  t.match(fromEnv.out, new RegExp(`^SEED_LAUNCH_TOKEN=${fromEnv.broker.seed?.launchToken}$`, 'm'));
  t.match(fromEnv.out, new RegExp(`^SEED_ADMIN_TOKEN=${fromEnv.broker.seed?.adminToken}$`, 'm'));
  const fromFlag = await runOnce(['--seed-tokens'], {});
  t.match(fromFlag.out, /^SEED_LAUNCH_TOKEN=[0-9a-f]{64}$/m);
  const off = await runOnce([], { AA_SEED_TOKENS: 'false' });
  t.notMatch(off.out, /SEED_/);
  t.equal(off.err, '');
  const other = await runOnce([], { AA_SEED_TOKENS: '1' });
  t.notMatch(other.out, /SEED_/, 'only the exact value true, as in the broker');
  t.match(other.err, /AA_SEED_TOKENS="1" is not true or false: no seed tokens/);
});

t.test('a real broker process: the printed seed tokens work from a script', async (t) => {
  const loader = process.execArgv.filter((a) => a.includes('typescript'));
  const child = spawn(process.execPath, [...loader, 'src/cli/main.ts', 'broker', '--listen', '127.0.0.1:0', '--log-level', 'warn'], {
    env: { ...process.env, AA_ADMIN_SECRET: 'seed-process-secret', AA_SEED_TOKENS: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  const lines = await new Promise<{ url: string; launch: string; admin: string }>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      const url = /AgentWrit v1 API on (\S+)/.exec(out)?.[1];
      const launch = /^SEED_LAUNCH_TOKEN=(\S+)$/m.exec(out)?.[1];
      const admin = /^SEED_ADMIN_TOKEN=(\S+)$/m.exec(out)?.[1];
      if (url && launch && admin) resolve({ url, launch, admin });
    });
    child.once('exit', (code) => reject(new Error(`broker exited ${code}: ${out}`)));
  });
  const agent = await registerAgent(lines.url, { launchToken: lines.launch, orchId: 'o', taskId: 't', requestedScope: ['*:*:smoke'] });
  const revoked = await http(lines.url, 'POST', '/v1/revoke', { token: lines.admin, json: { level: 'token', target: payload(agent.accessToken).jti } });
  t.equal(revoked.status, 200, 'the seed admin token may revoke');
  t.same(await validate(lines.url, agent.accessToken), { valid: false, error: 'token is invalid or expired' });
  child.kill('SIGTERM');
  t.equal(await new Promise((r) => child.once('exit', r)), 0);
});
