/**
 * A broker serving TLS or mTLS (AA_TLS_MODE): the development broker serves both modes, and the
 * sidecar validates tokens against it with broker.caFile and a client certificate. Without the
 * client certificate the sidecar refuses (503), never allows.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import t, { type Test } from 'tap';
import { Agent, ProxyAgent, request } from 'undici';
import { BrokerTransport } from '../../src/auth/broker-transport.js';
import { startBroker } from '../../src/broker/index.js';
import { adminAuth, issueAgentToken, revoke } from '../../src/broker/client.js';
import { runBrokerCommand } from '../../src/cli/broker.js';
import { writePki } from '../helpers/pki.js';
import { startTestSidecar, type TestSidecar } from '../helpers/sidecar.js';
import { startUpstream } from '../helpers/upstream.js';

const dir = t.testdir({});
const pki = await writePki(dir);
const pem = (f: string) => readFileSync(f, 'utf8');
const SECRET = 'broker-tls-admin-secret';
const upstream = await startUpstream();
t.teardown(() => upstream.close());

const broker = await startBroker({
  listen: '127.0.0.1:0',
  adminSecret: SECRET,
  publicKeyOut: join(dir, 'broker.pem'),
  tls: { mode: 'mtls', cert: pem(pki.serverCert), key: pem(pki.serverKey), clientCa: pem(pki.caCert) },
});
t.teardown(() => broker.close());
const withClientCert = new Agent({ connect: { ca: pem(pki.caCert), cert: pem(pki.clientCert), key: pem(pki.clientKey) } });
t.teardown(() => withClientCert.close());

/** Stops the sidecar with the test; returns a call of the billing route with the token, as its status. */
function billingThrough(t: Test, sc: TestSidecar, token: string): () => Promise<number> {
  t.teardown(() => sc.close());
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${token}`, proxyTunnel: false });
  t.teardown(() => agent.close());
  return async () => {
    const r = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
    await r.body.dump();
    return r.statusCode;
  };
}

t.test('the development broker in mtls mode: HTTPS, client certificate required, HSTS', async (t) => {
  t.match(broker.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const ok = await request(`${broker.url}/v1/health`, { dispatcher: withClientCert });
  t.equal(ok.statusCode, 200);
  t.equal(ok.headers['strict-transport-security'], 'max-age=63072000; includeSubDomains');
  await ok.body.dump();
  const noCert = new Agent({ connect: { ca: pem(pki.caCert) } });
  t.teardown(() => noCert.close());
  await t.rejects(request(`${broker.url}/v1/health`, { dispatcher: noCert }), 'no client certificate: refused in the handshake');
  const noTrust = new Agent();
  t.teardown(() => noTrust.close());
  await t.rejects(request(`${broker.url}/v1/health`, { dispatcher: noTrust }), 'the broker certificate is not publicly trusted');
});

t.test('the sidecar validates over mTLS: allowed, then refused once revoked', async (t) => {
  const token = await issueAgentToken(broker.url, SECRET, ['read:billing:customer-12345'], {}, { dispatcher: withClientCert });
  const sc = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: {
      url: broker.url,
      verify: 'hybrid',
      publicKeyFile: join(dir, 'broker.pem'),
      revalidateAfter: '200ms',
      caFile: pki.caCert,
      clientCertFile: pki.clientCert,
      clientKeyFile: pki.clientKey,
    },
  });
  const get = billingThrough(t, sc, token);
  t.equal(await get(), 200);
  const admin = await adminAuth(broker.url, SECRET, { dispatcher: withClientCert });
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as { jti: string };
  await revoke(broker.url, admin.accessToken, 'token', payload.jti, { dispatcher: withClientCert });
  let status = 200;
  for (let i = 0; i < 40 && status === 200; i++) {
    await new Promise((r) => setTimeout(r, 50));
    status = await get();
  }
  t.equal(status, 401, 'the revocation is seen over mTLS within revalidateAfter');
});

t.test('without its client certificate the sidecar cannot ask the broker: 503, never allowed', async (t) => {
  const token = await issueAgentToken(broker.url, SECRET, ['read:billing:customer-12345'], {}, { dispatcher: withClientCert });
  const sc = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: { url: broker.url, verify: 'hybrid', publicKeyFile: join(dir, 'broker.pem'), caFile: pki.caCert },
  });
  t.teardown(() => sc.close());
  const agent = new ProxyAgent({ uri: sc.proxyUrl, token: `Bearer ${token}`, proxyTunnel: false });
  t.teardown(() => agent.close());
  const r = await request('http://api.example.com/customers/12345/billing', { dispatcher: agent });
  t.equal(r.statusCode, 503);
  t.equal(((await r.body.json()) as { error_code: string }).error_code, 'broker_unavailable');
});

t.test('a JWKS URL on the TLS broker is fetched with broker.caFile and the client certificate', async (t) => {
  const token = await issueAgentToken(broker.url, SECRET, ['read:billing:customer-12345'], {}, { dispatcher: withClientCert });
  const jwksUrl = `${broker.url}/.well-known/jwks.json`;
  const sc = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: { verify: 'offline', jwksUrl, caFile: pki.caCert, clientCertFile: pki.clientCert, clientKeyFile: pki.clientKey },
  });
  const get = billingThrough(t, sc, token);
  const readyz = async (s: TestSidecar) => {
    const r = await request(`${s.adminUrl}/readyz`);
    await r.body.dump();
    return r.statusCode;
  };
  let status = await readyz(sc);
  for (let i = 0; i < 40 && status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 50));
    status = await readyz(sc);
  }
  t.equal(status, 200, 'ready: the key set was fetched over mTLS');
  t.equal(await get(), 200);

  const untrusting = await startTestSidecar({ upstreamPort: upstream.port, broker: { verify: 'offline', jwksUrl, clientCertFile: pki.clientCert, clientKeyFile: pki.clientKey } });
  const refused = billingThrough(t, untrusting, token);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(await readyz(untrusting), 503, 'without broker.caFile the private CA is not trusted: not ready');
  t.equal(await refused(), 503, 'no key, refused, never allowed');
});

t.test('a renewed client certificate is followed without a restart; a pair that does not load is not', async (t) => {
  const certDir = t.testdir({});
  const other = await writePki(t.testdir({}), 'not-trusted-by-the-broker');
  const cert = join(certDir, 'tls.crt');
  const key = join(certDir, 'tls.key');
  /** Swaps both files in, each by rename as a Secret update or cert-manager would. */
  const install = (certPem: string, keyPem: string) => {
    for (const [file, text] of [[cert, certPem], [key, keyPem]]) {
      writeFileSync(`${file}.new`, text);
      renameSync(`${file}.new`, file);
    }
  };
  install(pem(pki.clientCert), pem(pki.clientKey));
  const token = await issueAgentToken(broker.url, SECRET, ['read:billing:customer-12345'], {}, { dispatcher: withClientCert });
  const sc = await startTestSidecar({
    upstreamPort: upstream.port,
    broker: { url: broker.url, verify: 'hybrid', publicKeyFile: join(dir, 'broker.pem'), revalidateAfter: '100ms', caFile: pki.caCert, clientCertFile: cert, clientKeyFile: key },
  });
  const get = billingThrough(t, sc, token);
  /** Asks every 50 ms for up to 4 s; the statuses seen, ending with `want` if it came. */
  const until = async (want: number) => {
    const seen: number[] = [];
    for (let i = 0; i < 80 && seen.at(-1) !== want; i++) {
      await new Promise((r) => setTimeout(r, 50));
      seen.push(await get());
    }
    return seen;
  };
  t.equal(await get(), 200);

  install(pem(pki.clientCert), pem(other.clientKey));
  await new Promise((r) => setTimeout(r, 1500));
  t.same([...new Set(await Promise.all([get(), get()]))], [200], 'a key that is not the certificate’s is not taken; the last good pair stays');

  install(pem(other.clientCert), pem(other.clientKey));
  t.equal((await until(503)).at(-1), 503, 'a certificate the broker does not accept is now presented: refused, never allowed');

  install(pem(pki.clientCert), pem(pki.clientKey));
  t.equal((await until(200)).at(-1), 200, 'a good certificate again: served again, no restart');
});

t.test('broker TLS files that do not load together stop the start with a clear error', async (t) => {
  const other = await writePki(t.testdir({}));
  t.throws(() => new BrokerTransport(1000, { clientCertFile: pki.clientCert, clientKeyFile: other.clientKey }), /broker TLS files do not load together/);
  t.throws(() => new BrokerTransport(1000, { caFile: join(dir, 'missing.crt') }), /broker\.caFile .*missing\.crt cannot be read: ENOENT/);
});

/** Runs `broker` with the given arguments and environment until ready (or exit). */
async function brokerCli(argv: string[], env: NodeJS.ProcessEnv) {
  const out = new PassThrough();
  const err = new PassThrough();
  let text = '';
  let errText = '';
  out.on('data', (c) => (text += c));
  err.on('data', (c) => (errText += c));
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  let url: string | undefined;
  const code = await runBrokerCommand(['--listen', '127.0.0.1:0', '--log-level', 'silent', ...argv], {
    stdout: out,
    stderr: err,
    env: { AA_ADMIN_SECRET: SECRET, ...env },
    stop: stopped,
    onReady: (b) => {
      url = b.url;
      stop();
    },
  });
  return { code, url, out: text, err: errText };
}

t.test('broker command: AA_TLS_* variables and flags, with clear errors', async (t) => {
  const tls = await brokerCli([], { AA_TLS_MODE: 'tls', AA_TLS_CERT: pki.serverCert, AA_TLS_KEY: pki.serverKey });
  t.equal(tls.code, 0);
  t.match(tls.url, /^https:/);
  t.match(tls.out, /TLS {10}tls/);
  const mtls = await brokerCli(['--tls-mode', 'mtls', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-client-ca', pki.caCert], {});
  t.equal(mtls.code, 0);
  t.match(mtls.out, /mtls \(client certificates required\)/);
  const missing = await brokerCli(['--tls-mode', 'mtls', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey], {});
  t.equal(missing.code, 2);
  t.match(missing.err, /TLS mode mtls needs the CA of client certificates: --tls-client-ca FILE \(or AA_TLS_CLIENT_CA\)/);
  const unreadable = await brokerCli([], { AA_TLS_MODE: 'tls', AA_TLS_CERT: join(dir, 'nope.crt'), AA_TLS_KEY: pki.serverKey });
  t.equal(unreadable.code, 2);
  t.match(unreadable.err, /a server certificate .*nope\.crt cannot be read: ENOENT/);
  const typo = await brokerCli([], { AA_TLS_MODE: 'mTLS' });
  t.equal(typo.code, 0);
  t.match(typo.url, /^http:/, 'an unknown mode serves plain HTTP, as the broker does');
  t.match(typo.err, /TLS mode "mTLS" is not none, tls or mtls: serving plain HTTP/);
});
