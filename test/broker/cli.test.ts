/**
 * `agentwrit-sidecar broker`: help text, argument errors, a run in-process, and a real process
 * stopped by SIGTERM.
 */
import { existsSync, readFileSync } from 'node:fs';
import t from 'tap';
import { runBrokerCommand } from '../../src/cli/broker.js';
import { registerAgent } from '../../src/broker/client.js';
import { capture, http, payload, runBrokerInProcess, spawnBrokerProcess } from './fixture.js';

t.test('--help says what it is for', async (t) => {
  const out = capture();
  t.equal(await runBrokerCommand(['--help'], { stdout: out.stream }), 0);
  t.match(out.text(), /DEVELOPMENT AND TEST BROKER - NOT A PRODUCTION BROKER/);
  t.match(out.text(), /Extension \(not part of AgentWrit\): GET \/\.well-known\/jwks\.json/);
  for (const flag of ['--listen', '--signing-key', '--public-key-out', '--admin-secret', '--state', '--issuer', '--audience', '--trust-domain', '--max-ttl', '--admin-token-ttl', '--app-token-ttl', '--default-ttl']) {
    t.match(out.text(), flag);
  }
});

t.test('argument errors', async (t) => {
  const err = capture();
  t.equal(await runBrokerCommand([], { stderr: err.stream, env: {} }), 2, 'no admin secret');
  t.match(err.text(), /admin secret is required/);
  t.equal(await runBrokerCommand(['--bogus', 'x'], { stderr: err.stream, env: {} }), 2);
  t.equal(await runBrokerCommand(['--listen'], { stderr: err.stream, env: { AA_ADMIN_SECRET: 's' } }), 2, 'flag without value');
  const bad = capture();
  t.equal(await runBrokerCommand(['--listen', '127.0.0.1:0', '--admin-secret', 'change-me-in-production'], { stderr: bad.stream }), 1);
  t.match(bad.text(), /placeholder/);
});

t.test('runs in-process until stopped', async (t) => {
  const dir = t.testdir();
  const out = capture();
  const { broker: b, stop } = await runBrokerInProcess(
    ['--listen', '127.0.0.1:0', '--signing-key', `${dir}/k.pem`, '--public-key-out', `${dir}/pub.pem`, '--state', `${dir}/s.json`, '--log-level', 'silent'],
    { stdout: out.stream, env: { AGENTWRIT_ADMIN_SECRET: 'from-env-secret' } },
  );
  t.match(out.text(), /DEVELOPMENT\/TEST BROKER - NOT FOR PRODUCTION USE/);
  t.match(out.text(), b.url);
  t.match(out.text(), b.kid);
  t.equal(readFileSync(`${dir}/pub.pem`, 'utf8'), b.publicKeyPem);
  t.equal((await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: 'from-env-secret' } })).status, 200, 'secret from the environment');
  t.equal(await stop(), 0);
  t.match(out.text(), /stopped\n$/);
  t.ok(existsSync(`${dir}/s.json`), 'state written before exit');
});

t.test('a real process exits 0 on SIGTERM', async (t) => {
  const b = await spawnBrokerProcess(t, ['--log-level', 'warn'], 'signal-test-secret');
  t.equal((await http(b.url, 'GET', '/v1/health')).status, 200);
  t.equal(await b.signal('SIGTERM'), 0);
  t.match(b.output(), /stopped/);
});

t.test('a broker whose log reader goes away keeps serving', async (t) => {
  const b = await spawnBrokerProcess(t, ['--log-level', 'info'], 'epipe-test-secret');
  b.closeStdout();
  await new Promise((r) => setTimeout(r, 100));
  // Each of these is logged, to a pipe nobody reads any more.
  for (let i = 0; i < 5; i++) {
    t.equal((await http(b.url, 'GET', '/v1/health')).status, 200, `request ${i + 1} answered`);
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(b.exitCode(), null, 'still running');
  t.equal(await b.signal('SIGTERM'), 0);
});

t.test("the broker's AA_* settings are read; a flag wins over its variable", async (t) => {
  const dir = t.testdir();
  const out = capture();
  const err = capture();
  const env = {
    AA_ADMIN_SECRET: 'env-secret-0123',
    AA_BIND_ADDRESS: '127.0.0.1',
    AA_PORT: '0',
    AA_ISSUER: 'https://broker.example',
    AA_AUDIENCE: 'sidecars',
    AA_TRUST_DOMAIN: 'env.example',
    AA_ADMIN_TOKEN_TTL: '42',
    AA_APP_TOKEN_TTL: 'soon',
    AA_SIGNING_KEY_PATH: `${dir}/signing.key`,
  };
  const { broker: b, stop } = await runBrokerInProcess(['--log-level', 'silent', '--max-ttl', '600'], { stdout: out.stream, stderr: err.stream, env });
  t.match(b.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'AA_BIND_ADDRESS and AA_PORT');
  t.ok(existsSync(`${dir}/signing.key`), 'AA_SIGNING_KEY_PATH');
  t.match(err.text(), /AA_APP_TOKEN_TTL="soon" is not a whole number of seconds: the default is used/);
  const auth = await http(b.url, 'POST', '/v1/admin/auth', { json: { secret: 'env-secret-0123' } });
  t.equal(auth.json.expires_in, 42, 'AA_ADMIN_TOKEN_TTL');
  const claims = payload(auth.json.access_token);
  t.equal(claims.iss, 'https://broker.example', 'AA_ISSUER');
  t.same(claims.aud, ['sidecars'], 'AA_AUDIENCE');
  const lt = await http(b.url, 'POST', '/v1/admin/launch-tokens', {
    token: auth.json.access_token,
    json: { agent_name: 'a', allowed_scope: ['read:data:*'], max_ttl: 7200 },
  });
  t.equal(lt.status, 201);
  const agent = await registerAgent(b.url, { launchToken: lt.json.launch_token, orchId: 'o', taskId: 't', requestedScope: ['read:data:x'] });
  t.match(agent.agentId, /^spiffe:\/\/env\.example\//, 'AA_TRUST_DOMAIN');
  t.equal(agent.expiresIn, 600, '--max-ttl clamps the launch token max_ttl of 7200');
  t.equal(await stop(), 0);

  // Flags and variables together: the flag wins.
  const both = { ...env, AA_ADMIN_TOKEN_TTL: '42', AA_PORT: '1' };
  const { broker: b2, stop: stop2 } = await runBrokerInProcess(['--log-level', 'silent', '--listen', '127.0.0.1:0', '--admin-token-ttl', '77', '--issuer', 'https://flag.example'], {
    stdout: capture().stream,
    stderr: capture().stream,
    env: both,
  });
  t.not(b2.port, 1, '--listen over AA_PORT');
  const auth2 = await http(b2.url, 'POST', '/v1/admin/auth', { json: { secret: 'env-secret-0123' } });
  t.equal(auth2.json.expires_in, 77, '--admin-token-ttl over AA_ADMIN_TOKEN_TTL');
  t.equal(payload(auth2.json.access_token).iss, 'https://flag.example', '--issuer over AA_ISSUER');
  t.equal(await stop2(), 0);

  const bad = capture();
  t.equal(await runBrokerCommand(['--max-ttl', 'long'], { stderr: bad.stream, env }), 2, 'a flag that is not a number');
  t.match(bad.text(), /--max-ttl "long" is not a whole number of seconds/);
});
