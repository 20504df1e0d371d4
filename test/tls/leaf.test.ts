import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createNetServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type SecureContext, TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import t from 'tap';
import { type CaMaterial, generateEphemeralCa, loadCaDir } from '../../src/tls/ca.js';
import { LeafCache, normalizeLeafHost } from '../../src/tls/leaf.js';

const run = promisify(execFile);
const HOUR = 3_600_000;

const ca = await generateEphemeralCa();
const dir = await mkdtemp(join(tmpdir(), 'aw-leaf-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const caFile = join(dir, 'ca.crt');
await writeFile(caFile, ca.certPem);

/** An HTTPS server on loopback that picks its certificate by SNI, as interception will. */
async function startSniServer(t: Tap, pick: (servername: string) => Promise<SecureContext>): Promise<number> {
  const server = createHttpsServer(
    {
      SNICallback: (name, cb) => {
        pick(name).then(
          (ctx) => cb(null, ctx),
          (e: Error) => cb(e),
        );
      },
    },
    (req, res) => res.end(`hello from ${req.headers.host}`),
  );
  await listen(t, server);
  return (server.address() as AddressInfo).port;
}

type Tap = { teardown(fn: () => unknown): void };

async function listen(t: Tap, server: Server): Promise<void> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
}

interface Handshake {
  authorized: boolean;
  error?: string;
  cert?: X509Certificate;
}

function handshake(port: number, opts: { servername?: string; ca?: string }): Promise<Handshake> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port, ca: opts.ca ?? ca.certPem, servername: opts.servername });
    sock.once('secureConnect', () => {
      resolve({ authorized: sock.authorized, cert: sock.getPeerX509Certificate() });
      sock.end();
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      resolve({ authorized: false, error: e.code ?? e.message });
      sock.destroy();
    });
  });
}

t.test('node tls and curl verify a leaf served through SNICallback against the CA', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: 24 * HOUR });
  const port = await startSniServer(t, (name) => cache.get(name));

  const ok = await handshake(port, { servername: 'api.example.test' });
  t.equal(ok.error, undefined);
  t.ok(ok.authorized);
  t.equal(ok.cert?.subjectAltName, 'DNS:api.example.test');
  t.equal(ok.cert?.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.ok(ok.cert?.checkIssued(new X509Certificate(ca.certPem)));

  const { stdout } = await run('curl', [
    '-sS', '--noproxy', '*', '--cacert', caFile, '--resolve', `api.example.test:${port}:127.0.0.1`, `https://api.example.test:${port}/`,
  ]);
  t.equal(stdout, `hello from api.example.test:${port}`);
  t.same(cache.stats().minted, 1, 'curl reused the leaf node minted');
  t.equal(cache.stats().hits, 1);

  const other = await generateEphemeralCa();
  const untrusted = await handshake(port, { servername: 'api.example.test', ca: other.certPem });
  t.equal(untrusted.error, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'a different CA does not verify it');
});

t.test('a leaf for another host fails hostname verification', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: 24 * HOUR });
  const port = await startSniServer(t, () => cache.get('other.example.test'));
  const res = await handshake(port, { servername: 'api.example.test' });
  t.equal(res.error, 'ERR_TLS_CERT_ALTNAME_INVALID');
  const curl = await run('curl', [
    '-sS', '--noproxy', '*', '--cacert', caFile, '--resolve', `api.example.test:${port}:127.0.0.1`, `https://api.example.test:${port}/`,
  ]).then(
    () => undefined,
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(curl?.code, 60, 'curl: peer certificate cannot be authenticated');
  t.match(curl?.stderr, /no alternative certificate subject name matches|does not match/);
});

t.test('IP literals get an iPAddress SAN', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: 24 * HOUR });
  const secureContext = await cache.get('127.0.0.1');
  // As inside a CONNECT tunnel: the raw socket is wrapped with the context chosen for its authority.
  const server = createNetServer((raw) => {
    const s = new TLSSocket(raw, { isServer: true, secureContext });
    s.on('error', () => s.destroy());
    s.end('ip');
  });
  await listen(t, server);
  const res = await handshake((server.address() as AddressInfo).port, {});
  t.equal(res.error, undefined);
  t.ok(res.authorized, 'verified against 127.0.0.1 without SNI');
  t.equal(res.cert?.subjectAltName, 'IP Address:127.0.0.1');

  const v6 = new X509Certificate(await cache.certificatePem('[0:0:0:0:0:0:0:1]'));
  t.equal(v6.checkIP('::1'), '::1');
  t.equal(v6.checkHost('localhost'), undefined);
  await cache.get('::1');
  t.equal(cache.stats().minted, 2, '[0:0:...:1] and ::1 share one leaf');
});

t.test('openssl accepts the leaf: chain, purpose, host and extensions', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: 2 * HOUR });
  const before = Date.now();
  const leafPem = await cache.certificatePem('api.example.test');
  const leafFile = join(dir, 'leaf.pem');
  await writeFile(leafFile, leafPem);
  const verify = await run('openssl', ['verify', '-CAfile', caFile, '-purpose', 'sslserver', '-verify_hostname', 'api.example.test', leafFile]);
  t.match(verify.stdout, /leaf\.pem: OK/);
  const wrongHost = await run('openssl', ['verify', '-CAfile', caFile, '-verify_hostname', 'evil.example.test', leafFile]).then(
    () => 'verified',
    (e: { stdout: string; stderr: string }) => e.stdout + e.stderr,
  );
  t.match(wrongHost, /hostname mismatch/);

  const { stdout } = await run('openssl', ['x509', '-noout', '-text', '-in', leafFile]);
  t.match(stdout, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  t.match(stdout, /X509v3 Key Usage: critical\s+Digital Signature\n/);
  t.match(stdout, /X509v3 Extended Key Usage:\s+TLS Web Server Authentication\n/);
  t.match(stdout, /X509v3 Subject Alternative Name:\s+DNS:api\.example\.test\n/);
  t.notMatch(stdout, /\*/, 'no wildcard anywhere');
  const caText = (await run('openssl', ['x509', '-noout', '-text', '-in', caFile])).stdout;
  const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(caText)?.[1];
  t.ok(ski);
  t.match(stdout, new RegExp(`Authority Key Identifier:\\s+(keyid:)?${ski}`), 'AKI is the CA SKI');

  const leaf = new X509Certificate(leafPem);
  const notBefore = new Date(leaf.validFrom).getTime();
  const notAfter = new Date(leaf.validTo).getTime();
  t.ok(notBefore <= before - 5 * 60_000 + 1000 && notBefore >= before - 5 * 60_000 - 2000, 'backdated 5 minutes');
  t.ok(Math.abs(notAfter - (before + 2 * HOUR)) < 3000, 'valid for validityMs');
  const second = new X509Certificate(await cache.certificatePem('b.example.test'));
  t.not(second.serialNumber, leaf.serialNumber, 'random serials');
  t.equal(second.serialNumber.length, 32);
  t.ok(second.publicKey.equals(leaf.publicKey), 'one leaf key pair for every leaf');
});

t.test('a leaf never outlives the CA, and nothing is minted once the CA has expired', async (t) => {
  let now = ca.notAfter.getTime() - HOUR;
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: 24 * HOUR, now: () => now });
  const leaf = new X509Certificate(await cache.certificatePem('late.example.test'));
  t.equal(new Date(leaf.validTo).getTime(), ca.notAfter.getTime());
  now = ca.notAfter.getTime() + 1000;
  await t.rejects(cache.get('later.example.test'), /CA expired on/);
  t.equal(cache.size(), 1);
});

t.test('leaves are re-minted when within 10% of expiry', async (t) => {
  const start = Date.now();
  let now = start;
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: 10 * HOUR, now: () => now });
  const first = await cache.get('r.example.test');
  now = start + 8.9 * HOUR;
  t.equal(await cache.get('r.example.test'), first, 'still fresh at 89% of its life');
  now = start + 9.1 * HOUR;
  const second = await cache.get('r.example.test');
  t.not(second, first, 're-minted at 91%');
  t.same(cache.stats(), { minted: 2, hits: 1, lastMintMs: cache.stats().lastMintMs });
  t.equal(await cache.get('r.example.test'), second);
  t.equal(cache.size(), 1);
});

t.test('concurrent requests for one host share a single mint', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: HOUR });
  const all = await Promise.all(Array.from({ length: 64 }, () => cache.get('busy.example.test')));
  t.equal(cache.stats().minted, 1);
  t.ok(all.every((c) => c === all[0]));
  t.ok(cache.stats().lastMintMs > 0);
  const mixed = await Promise.all(['a', 'b', 'a', 'c', 'b', 'a'].map((h) => cache.get(`${h}.example.test`)));
  t.equal(cache.stats().minted, 4);
  t.equal(mixed[0], mixed[2]);
  t.not(mixed[0], mixed[1]);
});

t.test('the cache stays bounded with thousands of distinct hosts and evicts the least recently used', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 100, validityMs: HOUR });
  let maxSize = 0;
  for (let i = 0; i < 2000; i += 20) {
    // Keep one host in use throughout: it must never be evicted.
    await cache.get('kept.example.test');
    await Promise.all(Array.from({ length: 20 }, (_, j) => cache.get(`h${i + j}.example.test`)));
    maxSize = Math.max(maxSize, cache.size());
  }
  t.equal(maxSize, 100);
  t.equal(cache.stats().minted, 2001, 'kept.example.test was minted once');
  await cache.get('h1999.example.test');
  t.equal(cache.stats().minted, 2001, 'a recent host is a hit');
  await cache.get('h0.example.test');
  t.equal(cache.stats().minted, 2002, 'the oldest host was evicted and is minted again');
  t.equal(cache.size(), 100);
});

t.test('invalid host names are refused without minting', async (t) => {
  const cache = new LeafCache(ca, { maxEntries: 10, validityMs: HOUR });
  const bad = [
    '', '*.example.com', 'a.*.example.com', 'a..b', '.a.b', '-a.example.com', 'a-.example.com', 'a_b.example.com',
    'exa mple.com', `${'a'.repeat(64)}.com`, `${'a.'.repeat(127)}ab`, '1.2.3', '256.1.1.1', '01.2.3.4', '[1.2.3.4]',
    'fe80::1%eth0', '[fe80::1%25eth0]', 'héllo.example', 'a.example.com:443', 'a/b', 'a\u0000.com', '..',
  ];
  for (const h of bad) await t.rejects(cache.get(h), /not a DNS host name or IP address/, JSON.stringify(h));
  await t.rejects(cache.get(undefined as unknown as string), /not a DNS host name/);
  t.equal(cache.stats().minted, 0);
  t.equal(cache.size(), 0);

  t.equal(normalizeLeafHost('API.Example.TEST.'), 'api.example.test');
  t.equal(normalizeLeafHost('xn--hlo-bma.example'), 'xn--hlo-bma.example');
  t.equal(normalizeLeafHost('localhost'), 'localhost');
  t.equal(normalizeLeafHost('[2001:DB8:0:0:0:0:0:1]'), '2001:db8::1');
  await cache.get('API.Example.TEST.');
  await cache.get('api.example.test');
  t.equal(cache.stats().minted, 1, 'case and a trailing dot do not make a new leaf');

  const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.example`;
  const leaf = new X509Certificate(await cache.certificatePem(long));
  t.equal(leaf.subject, undefined, 'a name too long for a CN is in the SAN only');
  t.equal(leaf.checkHost(long), long);
});

t.test('constructor options are validated', async (t) => {
  t.throws(() => new LeafCache(ca, { maxEntries: 0, validityMs: HOUR }), /maxEntries/);
  t.throws(() => new LeafCache(ca, { maxEntries: 1.5, validityMs: HOUR }), /maxEntries/);
  t.throws(() => new LeafCache(ca, { maxEntries: 1, validityMs: 0 }), /validity/);
});

t.test('a CA loaded from openssl files (RSA) signs leaves that verify', async (t) => {
  const caDir = await mkdtemp(join(tmpdir(), 'aw-rsa-'));
  t.teardown(() => rm(caDir, { recursive: true, force: true }));
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=Example RSA CA', '-days', '2',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-keyout', join(caDir, 'ca.key'), '-out', join(caDir, 'ca.crt'),
  ]);
  const rsa: CaMaterial = await loadCaDir(caDir);
  const cache = new LeafCache(rsa, { maxEntries: 10, validityMs: HOUR });
  await cache.warm();
  t.same([cache.stats().minted, cache.size()], [0, 0], 'warm() caches and counts nothing');
  const port = await startSniServer(t, (name) => cache.get(name));
  const res = await handshake(port, { servername: 'rsa.example.test', ca: rsa.certPem });
  t.equal(res.error, undefined);
  t.ok(res.authorized);
  const leafFile = join(caDir, 'leaf.pem');
  await writeFile(leafFile, await cache.certificatePem('rsa.example.test'));
  const { stdout } = await run('openssl', ['verify', '-CAfile', join(caDir, 'ca.crt'), leafFile]);
  t.match(stdout, /: OK/);
});

t.test('a CA key that cannot be used fails at warm() and get(), without quoting the key', async (t) => {
  const broken: CaMaterial = { ...ca, keyPem: 'garbage-key-material' };
  const cache = new LeafCache(broken, { maxEntries: 10, validityMs: HOUR });
  await t.rejects(cache.warm(), { message: 'CA key: not a usable PEM private key' });
  await t.rejects(cache.get('x.example.test'), { message: 'CA key: not a usable PEM private key' });
  t.equal(cache.size(), 0);
});
