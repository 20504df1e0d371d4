/**
 * Hostile or broken input on CONNECT tunnels: each case ends in a defined refusal or close, an
 * audit record where a decision was made, and a sidecar that keeps serving. This sidecar loads its
 * CA from a directory made by `ca init` and has a short idle timeout and a small leaf cache.
 */
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { ProxyAgent, request } from 'undici';
import { initCaDir } from '../../src/tls/ca.js';
import { connectRequest, eventually, rawRequest, startHttpsFixture } from '../helpers/https-fixture.js';
import { tempDir } from '../helpers/tmp.js';

const caDir = join(tempDir('aws-ca-'), 'ca');
const ca = await initCaDir(caDir);
const fx = await startHttpsFixture({ tls: { caDir, tunnelIdleTimeout: '400ms', leafCacheSize: 20 } });
t.teardown(() => fx.close());
const token = await fx.token();

/** CONNECT to api.example.com:443, send `bytes`, and resolve when the sidecar closes the tunnel. */
async function sendAfterConnect(bytes: Buffer, opts: { thenDestroy?: boolean } = {}): Promise<{ answer: string; requestId: string }> {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', token));
  if (r.status !== 200) throw new Error(`CONNECT answered ${r.status}`);
  const requestId = /x-request-id: (\S+)/i.exec(r.head)![1];
  let answer = '';
  r.socket.on('data', (c: Buffer) => {
    answer += c.toString('latin1');
  });
  r.socket.on('error', () => {});
  const closed = new Promise((resolve) => r.socket.once('close', resolve));
  if (bytes.length > 0) r.socket.write(bytes);
  if (opts.thenDestroy) r.socket.destroy();
  await closed;
  return { answer, requestId };
}

async function closeRecord(requestId: string): Promise<Record<string, unknown>> {
  let rec: Record<string, unknown> | undefined;
  await eventually(async () => {
    rec = (await fx.audit()).find((r) => r.type === 'tunnel_closed' && r.request_id === requestId);
    return rec !== undefined;
  });
  return rec!;
}

async function activeTunnels(): Promise<number> {
  return Number(/agentwrit_sidecar_active_tunnels (\d+)/.exec(await fx.metrics())![1]);
}

t.test('the CA from tls.caDir signs the leaves', async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', token));
  const s = await new Promise<import('node:tls').TLSSocket>((resolve, reject) => {
    const c = tlsConnect({ socket: r.socket, servername: 'api.example.com', ca: ca.certPem }, () => resolve(c));
    c.once('error', reject);
  });
  t.ok(new X509Certificate(s.getPeerX509Certificate()!.raw).checkIssued(new X509Certificate(ca.certPem)));
  t.equal(fx.sc.tls.caFingerprint256, ca.fingerprint256);
  t.equal(fx.sc.tls.caSource, 'caDir');
  s.destroy();
});

t.test('bytes that are neither TLS nor HTTP close the tunnel', async (t) => {
  const { answer, requestId } = await sendAfterConnect(Buffer.from([0x00, 0x01, 0x02, 0xff]));
  t.equal(answer, '', 'nothing is sent back');
  t.match(await closeRecord(requestId), { outcome: 'intercepted', close_reason: 'not_tls_or_http' });
});

t.test('garbage that starts like a TLS record fails the handshake and closes', async (t) => {
  const { requestId } = await sendAfterConnect(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x20]), Buffer.alloc(32, 0x41)]));
  t.match(await closeRecord(requestId), { close_reason: 'tls_handshake_failed' });
});

t.test('garbage that starts like a request method gets 400 and a close', async (t) => {
  const { answer, requestId } = await sendAfterConnect(Buffer.from('XYZZY \x01\x02 nonsense\r\n\r\n', 'latin1'));
  t.match(answer, /^HTTP\/1\.1 400 /);
  t.match(await closeRecord(requestId), { close_reason: 'bad_http' });
});

t.test('a client that disconnects mid-handshake', async (t) => {
  const partial = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), Buffer.alloc(20, 7)]);
  const { requestId } = await sendAfterConnect(partial, { thenDestroy: true });
  const rec = await closeRecord(requestId);
  t.equal(rec.outcome, 'intercepted');
  t.ok(['tls_handshake_failed', 'client_closed', 'closed'].includes(rec.close_reason as string), `closed: ${rec.close_reason}`);
  await eventually(async () => (await activeTunnels()) === 0);
});

t.test('a tunnel left idle is closed after tls.tunnelIdleTimeout', async (t) => {
  const started = Date.now();
  const { requestId } = await sendAfterConnect(Buffer.alloc(0));
  const took = Date.now() - started;
  t.ok(took >= 350 && took < 2000, `closed after ${took} ms`);
  t.match(await closeRecord(requestId), { close_reason: 'idle_timeout' });

  // Idle after a completed request on a kept-alive TLS connection, too.
  const agent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}`, requestTls: { ca: ca.certPem } });
  t.teardown(() => agent.close());
  const res = await request('https://api.example.com/customers/12345/billing', { dispatcher: agent });
  t.equal(res.statusCode, 200);
  await res.body.dump();
  await eventually(async () => (await activeTunnels()) === 0, 3000);
});

t.test('an idle pass-through tunnel is cut too, and audited with its byte counts', async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('pass.example.com:443', token));
  t.equal(r.status, 200);
  const requestId = /x-request-id: (\S+)/i.exec(r.head)![1];
  const started = Date.now();
  await new Promise((resolve) => r.socket.once('close', resolve));
  t.ok(Date.now() - started >= 350, 'held open until the idle timeout');
  t.match(await closeRecord(requestId), { outcome: 'passed_through', close_reason: 'idle_timeout', bytes_in: 0, bytes_out: 0 });
});

t.test('SNI naming another host: the handshake is refused and audited as a denial', async (t) => {
  const r = await rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', token));
  const requestId = /x-request-id: (\S+)/i.exec(r.head)![1];
  const err = await new Promise<Error | undefined>((resolve) => {
    const c = tlsConnect({ socket: r.socket, servername: 'untrusted.example.com', ca: ca.certPem }, () => resolve(undefined));
    c.once('error', resolve);
  });
  t.ok(err, 'client sees the handshake fail');
  t.match(await closeRecord(requestId), { decision: 'deny', error_code: 'tunnel_refused', close_reason: 'sni_mismatch' });
});

for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
  t.test(`${version}: a resumed session naming another host in SNI is cut as well`, async (t) => {
    const tunnel = () => rawRequest(fx.sc.proxyPort, connectRequest('api.example.com:443', token));
    // A first tunnel to api.example.com, whose session the client keeps.
    let session: Buffer | undefined;
    const first = tlsConnect({ socket: (await tunnel()).socket, ca: ca.certPem, servername: 'api.example.com', minVersion: version, maxVersion: version });
    first.on('session', (b: Buffer) => {
      session = b;
    });
    await new Promise((r) => first.once('secureConnect', r));
    first.write('GET /customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\n\r\n');
    await new Promise((r) => first.once('data', r));
    first.destroy();
    // A second one to api.example.com offers that session (if one was given) with SNI naming another host.
    const r = await tunnel();
    const requestId = /x-request-id: (\S+)/i.exec(r.head)![1];
    const second = tlsConnect({
      socket: r.socket,
      ca: ca.certPem,
      servername: 'untrusted.example.com',
      ...(session ? { session } : {}),
      minVersion: version,
      maxVersion: version,
      checkServerIdentity: () => undefined,
    });
    second.on('error', () => {});
    let answer = '';
    second.on('data', (c: Buffer) => {
      answer += c.toString('latin1');
    });
    second.once('secureConnect', () => second.write('GET /customers/12345/billing HTTP/1.1\r\nHost: api.example.com\r\n\r\n'));
    await new Promise((r) => second.once('close', r));
    t.equal(answer, '', 'nothing answered');
    t.match(await closeRecord(requestId), { decision: 'deny', error_code: 'tunnel_refused', close_reason: 'sni_mismatch' });
  });
}

t.test('thousands of distinct host names: the leaf cache stays bounded', async (t) => {
  const hosts = 1000;
  const before = fx.sc.tls.leaves.stats().minted;
  let next = 0;
  const worker = async () => {
    while (next < hosts) {
      const i = next++;
      const r = await rawRequest(fx.sc.proxyPort, connectRequest(`h${i}.many.test:443`, token));
      if (r.status !== 200) throw new Error(`host ${i}: ${r.status}`);
      r.socket.destroy();
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  t.equal(fx.sc.tls.leaves.stats().minted - before, hosts, 'one leaf per host');
  t.ok(fx.sc.tls.leaves.size() <= 20, `cache holds ${fx.sc.tls.leaves.size()} leaves`);
  await eventually(async () => (await activeTunnels()) === 0);
});

t.test('after all that, the sidecar is healthy and serves', async (t) => {
  const health = await fetch(`${fx.sc.adminUrl}/healthz`);
  t.equal(health.status, 200);
  const agent = new ProxyAgent({ uri: fx.sc.proxyUrl, token: `Bearer ${token}`, requestTls: { ca: ca.certPem } });
  t.teardown(() => agent.close());
  const res = await request('https://api.example.com/customers/12345/billing', { dispatcher: agent });
  t.equal(res.statusCode, 200);
  await res.body.dump();
});
