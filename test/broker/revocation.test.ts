/**
 * Revocation at each level kills exactly what reference §9.1 says, permanently, and a revoked
 * token is refused with 401 on Bearer endpoints (what real brokers do; §14.2).
 */
import t from 'tap';
import { adminAuth, createLaunchToken, delegate, type RegisteredAgent, registerAgent, revoke } from '../../src/broker/client.js';
import { ADMIN_SECRET, http, isValid, payload, withBroker } from './fixture.js';

t.test('revocation levels', async (t) => {
  const b = await withBroker(t);
  const url = b.url;
  const admin = (await adminAuth(url, ADMIN_SECRET)).accessToken;
  const lt = (await createLaunchToken(url, admin, { agentName: 'pool', allowedScope: ['read:data:*', 'write:data:*'], singleUse: false, maxTtl: 600 }))
    .launchToken;
  const agent = (taskId: string): Promise<RegisteredAgent> =>
    registerAgent(url, { launchToken: lt, orchId: 'orch', taskId, requestedScope: ['read:data:*', 'write:data:*'] });
  const give = async (from: string, to: RegisteredAgent) => (await delegate(url, from, { delegateTo: to.agentId, scope: ['read:data:*'], ttl: 300 })).accessToken;

  t.test('token: only that jti', async (t) => {
    const a = await agent('tok-a');
    const bb = await agent('tok-b');
    const ab = await give(a.accessToken, bb);
    const r = await http(url, 'POST', '/v1/revoke', { token: admin, json: { level: 'token', target: payload(a.accessToken).jti } });
    t.equal(r.status, 200);
    t.same(r.json, { revoked: true, level: 'token', target: payload(a.accessToken).jti, count: 1 });
    t.notOk(await isValid(url, a.accessToken), "the agent's token is dead");
    t.ok(await isValid(url, ab), 'a token it delegated lives');
    t.ok(await isValid(url, bb.accessToken), "the delegate's own token lives");
    const bearer = await http(url, 'POST', '/v1/token/renew', { token: a.accessToken });
    t.equal(bearer.status, 401);
    t.equal(bearer.json.error_code, 'unauthorized');
    t.equal(bearer.json.detail, 'token verification failed');
  });

  t.test('agent: every token whose sub is the agent, not those it delegated', async (t) => {
    const a = await agent('ag-a');
    const bb = await agent('ag-b');
    const ab = await give(a.accessToken, bb);
    const ba = await give(bb.accessToken, a); // sub = a, delegated by b
    await revoke(url, admin, 'agent', a.agentId);
    t.notOk(await isValid(url, a.accessToken));
    t.notOk(await isValid(url, ba), 'a token delegated to the agent dies too');
    t.ok(await isValid(url, ab), 'a token the agent delegated (other sub) lives');
    t.ok(await isValid(url, bb.accessToken));
  });

  t.test('task: the task, its delegated tokens, and future tokens of that task', async (t) => {
    const a = await agent('task-x');
    const bb = await agent('task-y');
    const ab = await give(a.accessToken, bb); // carries task-x
    t.equal(payload(ab).task_id, 'task-x');
    await revoke(url, admin, 'task', 'task-x');
    t.notOk(await isValid(url, a.accessToken));
    t.notOk(await isValid(url, ab), 'delegated tokens copy the task id and die with it');
    t.ok(await isValid(url, bb.accessToken), 'another task lives');
    t.ok(await isValid(url, admin), 'tokens without a task live');
    const later = await agent('task-x');
    t.notOk(await isValid(url, later.accessToken), 'a later registration under the task is dead on arrival');
  });

  t.test('chain: delegated descendants of the root, not the root itself', async (t) => {
    const root = await agent('ch-a');
    const mid = await agent('ch-b');
    const leaf = await agent('ch-c');
    const rootToMid = await give(root.accessToken, mid);
    const midToLeafViaRoot = await give(rootToMid, leaf); // chain [root, mid]
    const midToLeaf = await give(mid.accessToken, leaf); // chain [mid]
    t.equal(payload(midToLeafViaRoot).delegation_chain.length, 2);
    await revoke(url, admin, 'chain', root.agentId);
    t.notOk(await isValid(url, rootToMid));
    t.notOk(await isValid(url, midToLeafViaRoot), 'every depth under the root');
    t.ok(await isValid(url, root.accessToken), "the root's own token survives (reference §14.4)");
    t.ok(await isValid(url, midToLeaf), 'a chain with another root survives');
    t.ok(await isValid(url, mid.accessToken));
  });

  t.test('bad revocation requests', async (t) => {
    const empty = await http(url, 'POST', '/v1/revoke', { token: admin, json: { level: 'token' } });
    t.equal(empty.status, 400);
    t.equal(empty.json.error_code, 'invalid_request');
    const level = await http(url, 'POST', '/v1/revoke', { token: admin, json: { level: 'session', target: 'x' } });
    t.equal(level.status, 400);
    t.equal(level.json.detail, 'invalid revocation level: session');
    const a = await agent('rv');
    const byAgent = await http(url, 'POST', '/v1/revoke', { token: a.accessToken, json: { level: 'token', target: 'x' } });
    t.equal(byAgent.status, 403);
    t.equal(byAgent.json.error_code, 'insufficient_scope');
    t.equal(byAgent.json.detail, 'token lacks required scope: admin:revoke:*');
    t.ok(await isValid(url, a.accessToken));
  });

  t.test('audit records each revocation with the target as agent_id', async (t) => {
    const r = await http(url, 'GET', '/v1/audit/events?event_type=token_revoked', { token: admin });
    t.equal(r.status, 200);
    t.equal(r.json.total, 4);
    t.same(
      r.json.events.map((e: { detail: string }) => e.detail.split(' ')[2]),
      ['level=token', 'level=agent', 'level=task', 'level=chain'],
    );
    const task = r.json.events[2];
    t.equal(task.agent_id, 'task-x');
    t.equal(task.detail, 'revoked at level=task target=task-x');
  });
});
