/**
 * Connections that outlive the request that opened them — pass-through tunnels and WebSockets —
 * end with their token: cut at its expiry, and when the broker refuses it at a revalidation.
 */
import type { Socket } from 'node:net';
import t from 'tap';
import { ALL_SCOPES, connectRequest, openWss, rawRequest, startHttpsFixture } from '../helpers/https-fixture.js';
import { signToken } from '../helpers/tokens.js';
import { startValidateBroker } from '../helpers/validate-broker.js';

const broker = await startValidateBroker('valid');
t.teardown(() => broker.close());
// Idle tunnels would be cut after 30 s: anything sooner is the token's doing.
const fx = await startHttpsFixture({ broker: { verify: 'hybrid', url: broker.url, revalidateAfter: '1s' }, tls: { tunnelIdleTimeout: '30s' } });
t.teardown(() => fx.close());

/** Resolves with the time from now to the socket's close (capped). */
function closedWithin(socket: Socket, capMs: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(0);
    const timer = setTimeout(() => resolve(capMs), capMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

async function closeReason(requestId: string): Promise<unknown> {
  const end = Date.now() + 3000;
  for (;;) {
    const rec = (await fx.audit()).find((r) => r.type === 'tunnel_closed' && r.request_id === requestId);
    if (rec || Date.now() > end) return rec?.close_reason;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const requestIdOf = (head: string) => /x-request-id: (\S+)/i.exec(head)?.[1] ?? '';

t.test('a pass-through tunnel is cut when its token expires', async (t) => {
  const token = await signToken(fx.key, { scope: ALL_SCOPES, ttl: 2 });
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('pass.example.com:443', token));
  t.equal(r.status, 200);
  const ms = await closedWithin(r.socket, 10_000);
  t.ok(ms < 4000, `closed by the sidecar about when the token expired (${ms} ms)`);
  t.equal(await closeReason(requestIdOf(r.head)), 'token_expired');
});

t.test('a pass-through tunnel is cut when the broker no longer accepts its token', async (t) => {
  broker.mode = 'valid';
  t.teardown(() => {
    broker.mode = 'valid';
  });
  const token = await signToken(fx.key, { scope: ALL_SCOPES });
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('pass.example.com:443', token));
  t.equal(r.status, 200);
  t.equal(await closedWithin(r.socket, 1500), 1500, 'open while the broker accepts the token');
  broker.mode = 'invalid';
  const ms = await closedWithin(r.socket, 10_000);
  t.ok(ms < 4000, `cut within about revalidateAfter of the revocation (${ms} ms)`);
  t.equal(await closeReason(requestIdOf(r.head)), 'token_revoked');
});

t.test('a broker that cannot answer does not cut a tunnel', async (t) => {
  const token = await signToken(fx.key, { scope: ALL_SCOPES });
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('pass.example.com:443', token));
  t.equal(r.status, 200);
  broker.mode = 'error500';
  t.teardown(() => {
    broker.mode = 'valid';
  });
  t.equal(await closedWithin(r.socket, 3000), 3000, 'still open after several failed revalidations');
  r.socket.destroy();
});

t.test('a WebSocket is closed when the broker no longer accepts its token', async (t) => {
  const token = await signToken(fx.key, { scope: ALL_SCOPES });
  const ws = await openWss(t, fx, token);
  const closed = new Promise<number>((resolve) => {
    const started = Date.now();
    ws.onclose = () => resolve(Date.now() - started);
  });
  broker.mode = 'invalid';
  t.teardown(() => {
    broker.mode = 'valid';
  });
  const ms = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(10_000), 10_000))]);
  t.ok(ms < 4000, `closed within about revalidateAfter (${ms} ms)`);
  const end = Date.now() + 3000;
  let rec: Record<string, unknown> | undefined;
  while (!rec && Date.now() < end) {
    rec = (await fx.audit()).find((r) => r.type === 'tunnel_closed' && r.outcome === 'websocket' && r.close_reason === 'token_revoked');
    if (!rec) await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(rec, 'its tunnel_closed record says token_revoked');
});
