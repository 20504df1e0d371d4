/** Shared fixtures for the auth tests: the RFC 8032 test-1 key, token signing, a stand-in broker. */
import { createPrivateKey, createPublicKey, type KeyObject, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type SidecarConfig, SidecarConfigSchema } from '../../src/config/schema.js';

export const SEED_HEX = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
export const PUBLIC_HEX = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
export const KID = 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k';

export const privateKey: KeyObject = createPrivateKey({
  key: {
    kty: 'OKP',
    crv: 'Ed25519',
    d: Buffer.from(SEED_HEX, 'hex').toString('base64url'),
    x: Buffer.from(PUBLIC_HEX, 'hex').toString('base64url'),
  },
  format: 'jwk',
});
export const publicKey: KeyObject = createPublicKey(privateKey);

export const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64url');

export const HEADER = `{"alg":"EdDSA","typ":"JWT","kid":"${KID}"}`;

/** Signs header and payload JSON exactly as given (byte-exact, like the broker's Go encoder output). */
export function signJwt(payloadJson: string, headerJson = HEADER, key: KeyObject = privateKey): string {
  const input = `${b64(headerJson)}.${b64(payloadJson)}`;
  return `${input}.${sign(null, Buffer.from(input), key).toString('base64url')}`;
}

export interface ClaimsInput {
  sub?: string;
  exp: number;
  iat?: number;
  nbf?: number;
  jti?: string;
  iss?: string;
  aud?: string[];
  scope?: string[];
}

let counter = 0;
/** A broker-shaped agent token (claim order as in reference §4.2). */
export function agentToken(c: ClaimsInput, key: KeyObject = privateKey, headerJson = HEADER): string {
  counter++;
  const iat = c.iat ?? c.exp - 300;
  const claims: Record<string, unknown> = { iss: c.iss ?? '', sub: c.sub ?? `spiffe://agentwrit.local/agent/orch-1/task-1/${counter.toString(16).padStart(16, '0')}` };
  if (c.aud) claims.aud = c.aud;
  Object.assign(claims, {
    exp: c.exp,
    nbf: c.nbf ?? iat,
    iat,
    jti: c.jti ?? counter.toString(16).padStart(32, '0'),
    scope: c.scope ?? ['read:data:*'],
    task_id: 'task-1',
    orch_id: 'orch-1',
  });
  return signJwt(JSON.stringify(claims), headerJson, key);
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

export function writeKeyFiles(dir: string): { spki: string; pkcs8: string; jwks: string } {
  const spki = join(dir, 'broker-public.pem');
  const pkcs8 = join(dir, 'signing.key');
  const jwks = join(dir, 'jwks.json');
  writeFileSync(spki, publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(pkcs8, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(jwks, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'EdDSA' }] }));
  return { spki, pkcs8, jwks };
}

/** The broker section as the config loader resolves it. */
export function brokerConfig(b: Record<string, unknown>): SidecarConfig['broker'] {
  return SidecarConfigSchema.parse({ broker: b }).broker;
}

/** Records observer calls. */
export function recorder() {
  const verifications: string[] = [];
  const revalidations: string[] = [];
  return {
    verifications,
    revalidations,
    observer: {
      verification: (outcome: string, source: string) => {
        verifications.push(`${outcome}/${source}`);
      },
      revalidation: (_seconds: number, outcome: string) => {
        revalidations.push(outcome);
      },
    },
  };
}

/** The SidecarError code a verification ends in, or "ok". */
export async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return (e as { code: string }).code;
  }
}
