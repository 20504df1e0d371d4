/**
 * The sidecar's certificate authority: created by `ca init`, loaded from a directory (a mounted
 * Kubernetes Secret), or generated in memory at start. Only the certificate ever leaves the
 * process; the key is written once, by `ca init`, with mode 0600.
 */
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTrustBundle, writeFileAtomic } from './bundle.js';
import { signerSpecFor } from './signer.js';
import { type CryptoKeyPair, EC_P256, ECDSA_SHA256, subtle, x509 } from './x509.js';

export interface CaMaterial {
  certPem: string;
  /** PKCS#8 PEM; held in memory only, never logged or written by the running sidecar. */
  keyPem: string;
  subject: string;
  notAfter: Date;
  fingerprint256: string;
}

export const DEFAULT_CA_VALIDITY_DAYS = 365;
const DAY_MS = 86_400_000;
/** Clients whose clock lags ours must not see a CA that is "not yet valid". */
const CA_BACKDATE_MS = 3_600_000;

/** File names accepted in a CA directory, in order of preference: our own, then a kubernetes.io/tls Secret. */
const PAIRS = [
  { cert: 'ca.crt', key: 'ca.key' },
  { cert: 'tls.crt', key: 'tls.key' },
] as const;

async function createCa(validityDays: number): Promise<CaMaterial> {
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > 3650) {
    throw new Error(`CA validity must be a whole number of days between 1 and 3650, got ${validityDays}`);
  }
  const keys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [`agentwrit-sidecar CA ${randomBytes(4).toString('hex')}`] }],
    notBefore: new Date(now - CA_BACKDATE_MS),
    notAfter: new Date(now + validityDays * DAY_MS),
    keys,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [
      // pathLen 0: this CA signs leaves only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })
    .export({ format: 'pem', type: 'pkcs8' })
    .toString();
  return describe(new X509Certificate(cert.toString('pem')), keyPem);
}

function describe(cert: X509Certificate, keyPem: string): CaMaterial {
  return {
    certPem: cert.toString(),
    keyPem,
    subject: cert.subject.split('\n').join(', '),
    notAfter: new Date(cert.validTo),
    fingerprint256: cert.fingerprint256,
  };
}

/** 16 random bytes (unpredictable, positive, at most 20 octets: RFC 5280 §4.1.2.2). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x40;
  return b.toString('hex');
}

/** Ephemeral CA for when none is configured: the key exists only in this process. */
export async function generateEphemeralCa(): Promise<CaMaterial> {
  return createCa(DEFAULT_CA_VALIDITY_DAYS);
}

/**
 * `ca init`: create DIR (0700 if new) holding ca.key (PKCS#8 PEM, 0600) and ca.crt. Refuses to
 * replace an existing CA unless `force`, because agents already trusting the old one would break.
 */
export async function initCaDir(dir: string, opts: { force?: boolean; validityDays?: number } = {}): Promise<CaMaterial> {
  const keyPath = join(dir, 'ca.key');
  const certPath = join(dir, 'ca.crt');
  const ca = await createCa(opts.validityDays ?? DEFAULT_CA_VALIDITY_DAYS);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!opts.force) {
    for (const p of [keyPath, certPath]) {
      if (await exists(p)) throw new Error(`refusing to overwrite ${p}: a CA already exists there (use --force to replace it)`);
    }
    // Exclusive create: two concurrent `ca init` runs cannot both believe they own the key.
    const fh = await open(keyPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      await fh.writeFile(ca.keyPem);
      await fh.sync();
    } catch (e) {
      await fh.close();
      await rm(keyPath, { force: true });
      throw e;
    }
    await fh.close();
    try {
      await writeFileAtomic(certPath, ca.certPem, 0o644);
    } catch (e) {
      await rm(keyPath, { force: true });
      throw e;
    }
  } else {
    await writeFileAtomic(keyPath, ca.keyPem, 0o600);
    await writeFileAtomic(certPath, ca.certPem, 0o644);
  }
  return ca;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

async function readNamed(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`cannot read CA ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : (code ?? 'read failed')}`);
  }
}

/**
 * Load DIR/ca.crt + DIR/ca.key, or DIR/tls.crt + DIR/tls.key (a kubernetes.io/tls Secret). Every
 * error names the file at fault and never quotes key material.
 */
export async function loadCaDir(dir: string, now: Date = new Date()): Promise<CaMaterial> {
  let pair: (typeof PAIRS)[number] | undefined;
  for (const p of PAIRS) {
    if (await exists(join(dir, p.cert))) {
      pair = p;
      break;
    }
  }
  if (!pair) throw new Error(`no CA certificate in ${dir}: expected ca.crt and ca.key (or tls.crt and tls.key)`);
  const certPath = join(dir, pair.cert);
  const keyPath = join(dir, pair.key);
  const certText = await readNamed(certPath, 'certificate');
  const keyText = await readNamed(keyPath, 'key');

  let cert: X509Certificate;
  try {
    // Only the first certificate counts; any key accidentally in this file is dropped by re-encoding.
    cert = new X509Certificate(certText);
  } catch {
    throw new Error(`${certPath}: not a PEM certificate`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyText);
  } catch {
    throw new Error(`${keyPath}: not an unencrypted PEM private key`);
  }
  if (!cert.checkPrivateKey(key)) throw new Error(`${keyPath} does not match the certificate in ${certPath}`);
  if (!cert.ca) throw new Error(`${certPath} is not a CA certificate (basicConstraints CA:TRUE is missing)`);
  const ku = new x509.X509Certificate(cert.raw).getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw new Error(`${certPath}: key usage does not allow signing certificates (keyCertSign)`);
  }
  // A key we could not sign leaves with is refused now, naming its file.
  signerSpecFor(key, keyPath);
  const notAfter = new Date(cert.validTo);
  if (notAfter.getTime() <= now.getTime()) throw new Error(`${certPath} expired on ${notAfter.toISOString()}`);
  const notBefore = new Date(cert.validFrom);
  if (notBefore.getTime() > now.getTime()) throw new Error(`${certPath} is not valid before ${notBefore.toISOString()}`);
  return describe(cert, key.export({ format: 'pem', type: 'pkcs8' }).toString());
}

/**
 * Write the CA certificate (never the key) and a trust bundle (system CAs + ours) for agent
 * containers, each atomically with mode 0644. Either path may be omitted.
 */
export async function writeCaOutputs(ca: CaMaterial, out: { caCertOut?: string; bundleOut?: string }): Promise<void> {
  const cert = new X509Certificate(ca.certPem).toString();
  if (out.caCertOut) await writeFileAtomic(out.caCertOut, cert, 0o644);
  if (out.bundleOut) await writeFileAtomic(out.bundleOut, buildTrustBundle(cert), 0o644);
}
