/**
 * A reload re-decides the connections that outlive their request: a pass-through tunnel whose
 * entry is gone, and a WebSocket whose route now asks scopes its token lacks, are cut (close
 * reason policy_changed); a WebSocket the new policy still allows stays open.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { parse, stringify } from 'yaml';
import { ALL_SCOPES, connectRequest, eventually, openWss, rawRequest, startHttpsFixture } from '../helpers/https-fixture.js';

const fx = await startHttpsFixture({ tls: { tunnelIdleTimeout: '30s' } });
t.teardown(() => fx.close());

const requestIdOf = (head: string) => /x-request-id: (\S+)/i.exec(head)?.[1] ?? '';

t.test('a reload cuts the tunnels and WebSockets it no longer allows, and only those', async (t) => {
  const pass = await rawRequest(fx.sc.proxyPort, connectRequest('pass.example.com:443', await fx.token()));
  t.equal(pass.status, 200);
  let passClosed = false;
  pass.socket.on('close', () => {
    passClosed = true;
  });
  const narrow = await openWss(t, fx, await fx.token(ALL_SCOPES));
  const broad = await openWss(t, fx, await fx.token([...ALL_SCOPES, 'read:chat:*']));
  const closes: string[] = [];
  narrow.onclose = () => closes.push('narrow');
  broad.onclose = () => closes.push('broad');

  // The new policy: no pass-through entry; the chat route asks read:chat:vip-{room}.
  const file = join(fx.dir, 'policies', 'policy-0.yaml');
  const policy = parse(readFileSync(file, 'utf8'));
  delete policy.passThrough;
  for (const r of policy.routes) if (r.id === 'chat') r.scopes = ['read:chat:vip-{room}'];
  writeFileSync(file, stringify(policy));
  const reload = await request(`${fx.sc.adminUrl}/reload`, { method: 'POST' });
  t.equal(reload.statusCode, 200);
  await reload.body.dump();

  await eventually(() => passClosed && closes.includes('narrow'), 5000);
  t.ok(passClosed, 'the pass-through tunnel was closed');
  t.same(closes, ['narrow'], 'the WebSocket its token no longer covers was closed');
  // The one still allowed still works.
  const echoed = new Promise<string>((resolve) => {
    broad.onmessage = (e) => resolve(String(e.data));
  });
  broad.send('still here');
  t.equal(await echoed, 'echo:still here');
  t.same(closes, ['narrow']);

  const records = await fx.audit();
  const ended = records.filter((r) => r.type === 'tunnel_closed');
  t.match(
    ended.find((r) => r.request_id === requestIdOf(pass.head)),
    { outcome: 'passed_through', close_reason: 'policy_changed' },
  );
  t.match(
    ended.filter((r) => r.outcome === 'websocket'),
    [{ route: 'chat', close_reason: 'policy_changed' }],
    'one WebSocket ended, for the policy',
  );
  t.ok(fx.sc.logs.some((l) => l.includes('the new policy does not allow were closed') && l.includes('"connections":2')));
  broad.close();
});

t.test('a reload that lands while a tunnel is being opened is applied to it before it opens', async (t) => {
  const { startValidateBroker } = await import('../helpers/validate-broker.js');
  const slow = await startValidateBroker('valid');
  slow.delayMs = 800; // the token check takes a while: the reload lands during it
  const fx2 = await startHttpsFixture({ broker: { verify: 'online', url: slow.url }, tls: { tunnelIdleTimeout: '30s' } });
  t.teardown(async () => {
    await fx2.close();
    await slow.close();
  });
  const opening = rawRequest(fx2.sc.proxyPort, connectRequest('pass.example.com:443', await fx2.token()));
  await new Promise((r) => setTimeout(r, 300));
  const file = join(fx2.dir, 'policies', 'policy-0.yaml');
  const policy = parse(readFileSync(file, 'utf8'));
  delete policy.passThrough;
  writeFileSync(file, stringify(policy));
  const reload = await request(`${fx2.sc.adminUrl}/reload`, { method: 'POST' });
  await reload.body.dump();
  t.equal(reload.statusCode, 200);
  const r = await opening;
  t.equal(r.status, 403, 'refused under the policy in service when it would have opened');
  t.match(r.head, /tunnel_refused|application\/problem\+json/);
  r.socket.destroy();
});
