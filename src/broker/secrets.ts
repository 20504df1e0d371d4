/**
 * Secret hashing. The real broker uses bcrypt; Node has no bcrypt built in and this broker takes
 * no extra dependency, so the admin secret and app client secrets are hashed with node:crypto
 * scrypt (N=2^14, r=8, p=1, 16-byte salt) and compared in constant time. The stored form is
 * `scrypt$N$r$p$<salt b64>$<hash b64>`; a state file written by this broker is not readable by
 * the real one, and vice versa.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

function derive(secret: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, KEYLEN, { N: n, r, p, maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(secret, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [n, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![n, r, p].every((x) => Number.isSafeInteger(x) && x > 0)) return false;
  const expected = Buffer.from(parts[5]!, 'base64');
  const key = await derive(secret, Buffer.from(parts[4]!, 'base64'), n, r, p);
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** A fixed hash used to spend the same time on unknown client ids as on known ones. */
let decoyHash: Promise<string> | undefined;
export function decoyVerify(secret: string): Promise<boolean> {
  decoyHash ??= hashSecret(randomBytes(32).toString('hex'));
  return decoyHash.then((h) => verifySecret(secret, h));
}
