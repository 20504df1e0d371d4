import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { promisify } from 'node:util';
import t from 'tap';
import { generateEphemeralCa, initCaDir, loadCaDir, writeCaOutputs } from '../../src/tls/ca.js';

const run = promisify(execFile);

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'aw-ca-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

const mode = async (p: string) => (await stat(p)).mode & 0o777;
const DAY = 86_400_000;

t.test('initCaDir writes a 0600 PKCS#8 key and a P-256 CA certificate in a new 0700 directory', async (t) => {
  const dir = join(await tempDir(t), 'ca');
  const before = Date.now();
  const ca = await initCaDir(dir);
  t.equal(await mode(dir), 0o700);
  t.equal(await mode(join(dir, 'ca.key')), 0o600);
  t.equal(await mode(join(dir, 'ca.crt')), 0o644);
  const keyText = await readFile(join(dir, 'ca.key'), 'utf8');
  t.match(keyText, /^-----BEGIN PRIVATE KEY-----\n/);
  t.equal(keyText, ca.keyPem);
  const certText = await readFile(join(dir, 'ca.crt'), 'utf8');
  t.equal(certText, ca.certPem);
  t.notMatch(certText, /PRIVATE KEY/);

  const cert = new X509Certificate(certText);
  t.ok(cert.ca);
  t.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.match(ca.subject, /^CN=agentwrit-sidecar CA [0-9a-f]{8}$/);
  t.equal(ca.fingerprint256, cert.fingerprint256);
  t.ok(cert.verify(cert.publicKey), 'self-signed');
  const notBefore = new Date(cert.validFrom).getTime();
  t.ok(notBefore <= before - 3_590_000 && notBefore >= before - 3_700_000, 'backdated by about an hour');
  t.ok(Math.abs(ca.notAfter.getTime() - (before + 365 * DAY)) < 60_000, 'valid for a year');

  const { stdout } = await run('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'ca.crt')]);
  t.match(stdout, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
  t.match(stdout, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
  t.match(stdout, /X509v3 Subject Key Identifier:\s+[0-9A-F:]{59}/);
  t.match(stdout, /ecdsa-with-SHA256/);
  t.match(stdout, /NIST CURVE: P-256/);
});

t.test('initCaDir refuses to replace an existing CA unless forced', async (t) => {
  const dir = await tempDir(t);
  const first = await initCaDir(dir, { validityDays: 30 });
  t.ok(Math.abs(first.notAfter.getTime() - (Date.now() + 30 * DAY)) < 60_000);
  await t.rejects(initCaDir(dir), /refusing to overwrite .*ca\.key.*--force/);
  t.equal(await readFile(join(dir, 'ca.key'), 'utf8'), first.keyPem, 'key untouched');

  const onlyCert = await tempDir(t);
  await writeFile(join(onlyCert, 'ca.crt'), first.certPem);
  await t.rejects(initCaDir(onlyCert), /refusing to overwrite .*ca\.crt/);
  t.same(await readdir(onlyCert), ['ca.crt'], 'no key left behind');

  const second = await initCaDir(dir, { force: true });
  t.not(second.fingerprint256, first.fingerprint256);
  t.equal(await readFile(join(dir, 'ca.key'), 'utf8'), second.keyPem);
  t.equal(await mode(join(dir, 'ca.key')), 0o600);
  t.same((await readdir(dir)).sort(), ['ca.crt', 'ca.key'], 'no temp files left');
  await t.rejects(initCaDir(join(dir, 'x'), { validityDays: 0 }), /validity/);
});

t.test('loadCaDir reads back what initCaDir wrote, and a kubernetes TLS secret layout', async (t) => {
  const dir = await tempDir(t);
  const made = await initCaDir(dir);
  const loaded = await loadCaDir(dir);
  t.same(loaded, made);

  const secret = await tempDir(t);
  await writeFile(join(secret, 'tls.crt'), made.certPem);
  await writeFile(join(secret, 'tls.key'), made.keyPem);
  t.equal((await loadCaDir(secret)).fingerprint256, made.fingerprint256);
});

t.test('loadCaDir accepts an RSA CA made by openssl, and normalizes its files', async (t) => {
  const dir = await tempDir(t);
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/O=Example/CN=Example Private CA', '-days', '2',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', join(dir, 'tls.key'), '-out', join(dir, 'tls.crt'),
  ]);
  // A combined file (key and certificate together) is a common mistake: the key must not leak into certPem.
  const combined = (await readFile(join(dir, 'tls.key'), 'utf8')) + (await readFile(join(dir, 'tls.crt'), 'utf8'));
  await writeFile(join(dir, 'tls.crt'), combined);
  const ca = await loadCaDir(dir);
  t.equal(ca.subject, 'O=Example, CN=Example Private CA');
  t.notMatch(ca.certPem, /PRIVATE KEY/);
  t.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----/);
});

t.test('loadCaDir errors name the file and never quote key material', async (t) => {
  const good = await tempDir(t);
  const ca = await initCaDir(good);
  const keyBody = ca.keyPem.split('\n')[1];
  const check = async (dir: string, re: RegExp) => {
    const err = (await loadCaDir(dir).then(
      () => undefined,
      (e: Error) => e,
    )) as Error | undefined;
    t.ok(err, `loading ${dir} fails`);
    t.match(err?.message, re);
    t.notMatch(err?.message, /PRIVATE KEY/);
    t.notOk(err?.message.includes(keyBody), 'no key bytes in the message');
  };

  const empty = await tempDir(t);
  await check(empty, /no CA certificate in .*expected ca\.crt and ca\.key/);

  const noKey = await tempDir(t);
  await writeFile(join(noKey, 'ca.crt'), ca.certPem);
  await check(noKey, new RegExp(`cannot read CA key ${join(noKey, 'ca.key')}: no such file`));

  const other = await generateEphemeralCa();
  const mismatch = await tempDir(t);
  await writeFile(join(mismatch, 'ca.crt'), ca.certPem);
  await writeFile(join(mismatch, 'ca.key'), other.keyPem);
  await check(mismatch, /ca\.key does not match the certificate in .*ca\.crt/);

  const garbageCert = await tempDir(t);
  await writeFile(join(garbageCert, 'ca.crt'), 'not a certificate\n');
  await writeFile(join(garbageCert, 'ca.key'), ca.keyPem);
  await check(garbageCert, /ca\.crt: not a PEM certificate/);

  const garbageKey = await tempDir(t);
  await writeFile(join(garbageKey, 'ca.crt'), ca.certPem);
  await writeFile(join(garbageKey, 'ca.key'), `${ca.keyPem.slice(0, 80)}\n-----END PRIVATE KEY-----\n`);
  await check(garbageKey, /ca\.key: not an unencrypted PEM private key/);

  const leafOnly = await tempDir(t);
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=not-a-ca', '-days', '2',
    '-addext', 'basicConstraints=critical,CA:FALSE', '-keyout', join(leafOnly, 'ca.key'), '-out', join(leafOnly, 'ca.crt'),
  ]);
  await check(leafOnly, /ca\.crt is not a CA certificate/);

  const expired = await loadCaDir(good, new Date(Date.now() + 400 * DAY)).then(
    () => undefined,
    (e: Error) => e,
  );
  t.match(expired?.message, /ca\.crt expired on \d{4}-/);
});

t.test('generateEphemeralCa makes a fresh in-memory CA each time', async (t) => {
  const [a, b] = await Promise.all([generateEphemeralCa(), generateEphemeralCa()]);
  t.not(a.fingerprint256, b.fingerprint256);
  t.not(a.keyPem, b.keyPem);
  t.ok(new X509Certificate(a.certPem).ca);
  t.ok(a.notAfter.getTime() > Date.now() + 300 * DAY);
});

t.test('writeCaOutputs writes the certificate and the bundle, never the key, atomically with mode 0644', async (t) => {
  const dir = await tempDir(t);
  const ca = await generateEphemeralCa();
  const certOut = join(dir, 'out', 'ca.crt');
  const bundleOut = join(dir, 'out', 'bundle.pem');
  const previous = process.umask(0o077);
  t.teardown(() => process.umask(previous));
  await writeCaOutputs(ca, { caCertOut: certOut, bundleOut });

  const cert = await readFile(certOut, 'utf8');
  const bundle = await readFile(bundleOut, 'utf8');
  t.equal(cert, ca.certPem);
  for (const text of [cert, bundle]) {
    t.notMatch(text, /PRIVATE KEY/);
    t.notOk(text.includes(ca.keyPem.split('\n')[1]));
  }
  t.equal(await mode(certOut), 0o644);
  t.equal(await mode(bundleOut), 0o644);
  t.equal(bundle.match(/-----BEGIN CERTIFICATE-----/g)?.length, rootCertificates.length + 1);
  t.ok(bundle.includes(ca.certPem.trim()), 'our CA is in the bundle');
  t.ok(bundle.includes(rootCertificates[0].trim()) && bundle.includes(rootCertificates.at(-1)!.trim()), 'system CAs are in the bundle');
  t.same((await readdir(join(dir, 'out'))).sort(), ['bundle.pem', 'ca.crt'], 'no temp files left');

  // openssl reads the bundle as a CA file: our self-signed CA verifies against it.
  const { stdout } = await run('openssl', ['verify', '-CAfile', bundleOut, certOut]);
  t.match(stdout, /: OK/);

  const next = await generateEphemeralCa();
  await writeCaOutputs(next, { caCertOut: certOut });
  t.equal(await readFile(certOut, 'utf8'), next.certPem, 'replaced in place');
  t.equal(await readFile(bundleOut, 'utf8'), bundle, 'paths not given are not touched');
  await writeCaOutputs(next, {});
});
