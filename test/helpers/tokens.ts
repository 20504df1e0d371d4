/** Test key material and AgentWrit-shaped tokens, signed the way a broker signs them. */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, SignJWT } from 'jose';

export interface TestKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicPem: string;
  kid: string;
}

export async function makeKey(): Promise<TestKey> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x as string });
  return { privateKey, publicKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), kid };
}

export interface TokenClaims {
  sub?: string;
  scope: string[];
  ttl?: number;
  iss?: string;
  aud?: string[];
  task_id?: string;
  orch_id?: string;
  jti?: string;
  exp?: number;
  extra?: Record<string, unknown>;
}

export async function signToken(key: TestKey, c: TokenClaims): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iss: c.iss ?? '',
    sub: c.sub ?? 'spiffe://agentwrit.local/agent/orch-1/task-1/0123456789abcdef',
    ...(c.aud ? { aud: c.aud } : {}),
    exp: c.exp ?? now + (c.ttl ?? 300),
    nbf: now,
    iat: now,
    jti: c.jti ?? randomBytes(16).toString('hex'),
    scope: c.scope,
    task_id: c.task_id ?? 'task-1',
    orch_id: c.orch_id ?? 'orch-1',
    ...c.extra,
  };
  return new SignJWT(payload).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: key.kid }).sign(key.privateKey);
}
