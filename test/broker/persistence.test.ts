/**
 * Signing key file and --state: what survives a restart, and that the audit chain continues.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import t from 'tap';
import {
  adminAuth,
  allAuditEvents,
  appAuth,
  createApp,
  createLaunchToken,
  delegate,
  registerAgent,
  release,
  renew,
  revoke,
  verifyAuditChain,
} from '../../src/broker/client.js';
import { startBroker } from '../../src/broker/index.js';
import { ADMIN_SECRET, http, isValid, spawnBrokerProcess } from './fixture.js';

t.test('signing key file: created 0600, reused, public key exported', async (t) => {
  const dir = t.testdir();
  const keyFile = `${dir}/keys/signing.key`;
  const pubFile = `${dir}/out/broker.pem`;
  const b1 = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, signingKeyFile: keyFile, publicKeyOut: pubFile });
  t.teardown(() => b1.close());
  t.equal(statSync(keyFile).mode & 0o777, 0o600);
  t.equal(statSync(`${dir}/keys`).mode & 0o777, 0o700);
  t.match(readFileSync(keyFile, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
  const pem = readFileSync(pubFile, 'utf8');
  t.equal(pem, b1.publicKeyPem);
  const jwk = createPublicKey(pem).export({ format: 'jwk' });
  t.same((await http(b1.url, 'GET', '/.well-known/jwks.json')).json.keys[0].x, jwk.x);
  const token = (await adminAuth(b1.url, ADMIN_SECRET)).accessToken;
  await b1.close();

  const b2 = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, signingKeyFile: keyFile });
  t.teardown(() => b2.close());
  t.equal(b2.kid, b1.kid, 'same key, same kid');
  t.ok(await isValid(b2.url, token), 'tokens from before the restart still verify');

  const eph = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET });
  t.teardown(() => eph.close());
  t.not(eph.kid, b1.kid, 'without a key file the key is ephemeral');
  t.notOk(await isValid(eph.url, token), 'another key: kid mismatch');
  await Promise.all([b2.close(), eph.close()]);
});

t.test('bad key files and secrets are refused at start', async (t) => {
  const dir = t.testdir();
  const ec = `${dir}/ec.pem`;
  writeFileSync(ec, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await t.rejects(startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, signingKeyFile: ec }), /not Ed25519/);
  const sec1 = `${dir}/sec1.pem`;
  writeFileSync(sec1, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }));
  await t.rejects(startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, signingKeyFile: sec1 }), /PRIVATE KEY/);
  await t.rejects(startBroker({ listen: '127.0.0.1:0', adminSecret: '' }), /admin secret is required/);
  await t.rejects(startBroker({ listen: '127.0.0.1:0', adminSecret: 'change-me-in-production' }), /placeholder/);
  await t.rejects(startBroker({ listen: 'nonsense', adminSecret: ADMIN_SECRET }), /invalid listen address/);
  const state = `${dir}/state.json`;
  writeFileSync(state, '{"version":1,"apps":"nope"}');
  await t.rejects(startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, stateFile: state }), /unexpected state file content/);
  const taken = await startBroker({ listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET });
  t.teardown(() => taken.close());
  await t.rejects(startBroker({ listen: `127.0.0.1:${taken.port}`, adminSecret: ADMIN_SECRET }), /already in use/);
});

t.test('--state: apps, agents, revocations and the audit chain survive a restart', async (t) => {
  const dir = t.testdir();
  const opts = { listen: '127.0.0.1:0', adminSecret: ADMIN_SECRET, signingKeyFile: `${dir}/signing.key`, stateFile: `${dir}/state/broker.json` };
  const b1 = await startBroker(opts);
  t.teardown(() => b1.close());
  const admin = (await adminAuth(b1.url, ADMIN_SECRET)).accessToken;
  const app = await createApp(b1.url, admin, { name: 'kept', scopes: ['read:data:*'] });
  const lt = await createLaunchToken(b1.url, admin, { agentName: 'a', allowedScope: ['read:data:*'], singleUse: false, maxTtl: 600 });
  const a = await registerAgent(b1.url, { launchToken: lt.launchToken, orchId: 'o', taskId: 'keep', requestedScope: ['read:data:*'] });
  const victim = await registerAgent(b1.url, { launchToken: lt.launchToken, orchId: 'o', taskId: 'doomed', requestedScope: ['read:data:*'] });
  await revoke(b1.url, admin, 'task', 'doomed');
  const before = await allAuditEvents(b1.url, admin);
  await b1.close();
  t.equal(statSync(opts.stateFile).mode & 0o777, 0o600, 'the state file holds secret hashes: 0600');
  t.notMatch(readFileSync(opts.stateFile, 'utf8'), new RegExp(app.clientSecret), 'client secrets are stored hashed');

  const b2 = await startBroker(opts);
  t.teardown(() => b2.close());
  const admin2 = (await adminAuth(b2.url, ADMIN_SECRET)).accessToken;
  t.notOk(await isValid(b2.url, victim.accessToken), 'the revocation survived');
  t.ok(await isValid(b2.url, a.accessToken), 'an unrevoked token still verifies');
  t.ok(await appAuth(b2.url, app.clientId, app.clientSecret), 'the app and its secret survived');
  const d = await delegate(b2.url, a.accessToken, { delegateTo: a.agentId, scope: ['read:data:*'] });
  t.ok(d.accessToken, 'the agent record survived (delegation target found)');
  const reuse = await http(b2.url, 'POST', '/v1/register', { json: { launch_token: lt.launchToken } });
  t.equal(reuse.status, 400, 'sanity: missing fields');
  const lost = await registerAgent(b2.url, { launchToken: lt.launchToken, orchId: 'o', taskId: 'x', requestedScope: ['read:data:*'] }).catch((e) => e);
  t.equal(lost.status, 401, 'launch tokens live in memory only, like the real broker');

  const after = await allAuditEvents(b2.url, admin2);
  t.same(after.slice(0, before.length), before, 'old events unchanged');
  t.equal(after[before.length]!.id, `evt-${String(before.length + 1).padStart(6, '0')}`, 'the counter continues');
  t.equal(after[before.length]!.prev_hash, before[before.length - 1]!.hash, 'the chain continues');
  t.same(verifyAuditChain(after), { ok: true, count: after.length });
  const health = await http(b2.url, 'GET', '/v1/health');
  t.equal(health.json.audit_events_count, after.length);
  t.match((await http(b2.url, 'GET', '/v1/metrics')).text, new RegExp(`agentwrit_audit_events_loaded ${before.length}`));
  // Close before the test directory is removed: close() waits for the last state write.
  await b2.close();
});

t.test('--state: a revocation, release or renewal answered is on disk, even if the broker is killed right after', async (t) => {
  const dir = t.testdir();
  const args = ['--signing-key', `${dir}/signing.key`, '--state', `${dir}/broker.json`];
  const start = () => spawnBrokerProcess(t, ['--log-level', 'warn', ...args]);
  let b = await start();
  const admin = (await adminAuth(b.url, ADMIN_SECRET)).accessToken;
  const lt = await createLaunchToken(b.url, admin, { agentName: 'a', allowedScope: ['read:data:*'], singleUse: false, maxTtl: 600 });
  const agent = () => registerAgent(b.url, { launchToken: lt.launchToken, orchId: 'o', taskId: 't', requestedScope: ['read:data:*'] });
  const [revoked, released, renewed, kept] = [await agent(), await agent(), await agent(), await agent()];
  await b.signal('SIGKILL');
  b = await start();
  /** Runs `change` on a fresh broker, kills it the moment the answer is in, and starts another. */
  const killedAfter = async <T>(change: (url: string) => Promise<T>): Promise<T> => {
    await b.signal('SIGKILL');
    b = await start();
    const result = await change(b.url);
    await b.signal('SIGKILL');
    b = await start();
    return result;
  };
  t.ok(await isValid(b.url, kept.accessToken), 'registrations answered are on disk too');
  await killedAfter((url) => revoke(url, admin, 'agent', revoked.agentId));
  t.notOk(await isValid(b.url, revoked.accessToken), 'the revoked agent stays revoked');
  await killedAfter((url) => release(url, released.accessToken));
  t.notOk(await isValid(b.url, released.accessToken), 'the released token stays released');
  const successor = await killedAfter((url) => renew(url, renewed.accessToken));
  t.notOk(await isValid(b.url, renewed.accessToken), 'the renewed token stays superseded');
  t.ok(await isValid(b.url, successor.accessToken), 'its successor verifies');
  t.ok(await isValid(b.url, kept.accessToken), 'an untouched token still verifies');
  await b.signal('SIGKILL');
});
