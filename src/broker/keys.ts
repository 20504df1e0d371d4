/**
 * The broker's single Ed25519 signing key: it signs every JWT and every delegation record.
 * On disk it is a PKCS#8 PEM (`PRIVATE KEY` block), created with mode 0600 when absent; `kid` is
 * the RFC 7638 thumbprint of the public key.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface PublicJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid: string;
  alg: 'EdDSA';
  use: 'sig';
}

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Raw 32-byte public key. */
  publicRaw: Buffer;
  kid: string;
  publicKeyPem: string;
  jwk: PublicJwk;
}

/** RFC 7638 thumbprint: members in lexicographic order, no whitespace, SHA-256, base64url. */
export function jwkThumbprint(publicRaw: Buffer): string {
  const x = publicRaw.toString('base64url');
  const canonical = `{"crv":"Ed25519","kty":"OKP","x":"${x}"}`;
  return createHash('sha256').update(canonical, 'utf8').digest('base64url');
}

export function signingKeyFrom(privateKey: KeyObject): SigningKey {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('signing key is not an Ed25519 key');
  const publicKey = createPublicKey(privateKey);
  const x = publicKey.export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new Error('cannot export the Ed25519 public key');
  const publicRaw = Buffer.from(x, 'base64url');
  const kid = jwkThumbprint(publicRaw);
  return {
    privateKey,
    publicKey,
    publicRaw,
    kid,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    jwk: { kty: 'OKP', crv: 'Ed25519', x, kid, alg: 'EdDSA', use: 'sig' },
  };
}

// DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The private key for a 32-byte RFC 8032 seed (used for known-answer tests). */
export function privateKeyFromSeed(seed: Buffer): KeyObject {
  if (seed.length !== 32) throw new Error('an Ed25519 seed is 32 bytes');
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function generateSigningKey(): SigningKey {
  return signingKeyFrom(generateKeyPairSync('ed25519').privateKey);
}

/** Parses a PEM whose first block must be `PRIVATE KEY` (PKCS#8) holding an Ed25519 key. */
export function signingKeyFromPem(pem: string, source: string): SigningKey {
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1];
  if (label !== 'PRIVATE KEY') {
    throw new Error(`${source}: expected a PEM "PRIVATE KEY" (PKCS#8) block, found ${label ? `"${label}"` : 'no PEM block'}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(`${source}: the PKCS#8 private key cannot be parsed`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new Error(`${source}: the private key is ${key.asymmetricKeyType ?? 'unknown'}, not Ed25519`);
  }
  return signingKeyFrom(key);
}

/**
 * Loads the key file, or creates it (parent directories 0700, file 0600, exclusive create so a
 * concurrent start never overwrites a key that tokens were already signed with).
 */
export async function loadOrCreateSigningKey(file: string): Promise<{ key: SigningKey; created: boolean }> {
  try {
    return { key: signingKeyFromPem(await readFile(file, 'utf8'), file), created: false };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const key = generateSigningKey();
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateSigningKey(file);
    throw e;
  }
  try {
    await fh.writeFile(key.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { key, created: true };
}

/** Writes the SPKI public key PEM for verifiers (sidecars' `broker.publicKeyFile`). */
export async function writePublicKey(file: string, key: SigningKey): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, key.publicKeyPem, { mode: 0o644 });
}
