/**
 * AgentWrit JWTs: compact JWS, EdDSA, header `{"alg","typ","kid"}` in that order, claims in the
 * broker's field order with its omission rules. Signing uses node:crypto Ed25519 directly, so a
 * given key and claim set always give the same token bytes.
 */
import { sign, verify } from 'node:crypto';
import { decodeStruct, goJson, int, str, strings, structOf, type FieldDecoder, sliceOf } from './gojson.js';
import { parseOnlyValue } from './jsonparse.js';
import type { SigningKey } from './keys.js';
import { parseRfc3339 } from './timefmt.js';

export interface DelegRecord {
  agent: string;
  scope: string[] | null;
  delegated_at: string;
  signature: string;
}

export interface Claims {
  iss: string;
  sub: string;
  aud?: string[];
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  sid?: string;
  scope: string[] | null;
  task_id?: string;
  orch_id?: string;
  delegation_chain?: DelegRecord[];
  chain_hash?: string;
}

export function recordJson(r: DelegRecord): DelegRecord {
  return { agent: r.agent, scope: r.scope, delegated_at: r.delegated_at, signature: r.signature };
}

/**
 * The claim object in serialization order: `iss` always (empty when no issuer is configured),
 * `aud`, `sid`, `task_id`, `orch_id`, `delegation_chain`, `chain_hash` only when non-empty,
 * `scope` always (null when absent, as Go writes a nil slice).
 */
export function claimsJson(c: Claims): Record<string, unknown> {
  const o: Record<string, unknown> = { iss: c.iss, sub: c.sub };
  if (c.aud && c.aud.length > 0) o.aud = c.aud;
  o.exp = c.exp;
  o.nbf = c.nbf;
  o.iat = c.iat;
  o.jti = c.jti;
  if (c.sid) o.sid = c.sid;
  o.scope = c.scope ?? null;
  if (c.task_id) o.task_id = c.task_id;
  if (c.orch_id) o.orch_id = c.orch_id;
  if (c.delegation_chain && c.delegation_chain.length > 0) o.delegation_chain = c.delegation_chain.map(recordJson);
  if (c.chain_hash) o.chain_hash = c.chain_hash;
  return o;
}

export function headerJson(kid: string): string {
  return goJson({ alg: 'EdDSA', typ: 'JWT', kid });
}

export function encodeJwt(claims: Claims, key: SigningKey): string {
  const head = Buffer.from(headerJson(key.kid), 'utf8').toString('base64url');
  const body = Buffer.from(goJson(claimsJson(claims)), 'utf8').toString('base64url');
  const input = `${head}.${body}`;
  const sig = sign(null, Buffer.from(input, 'ascii'), key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

/** Strict base64url without padding (Go's RawURLEncoding); Node's decoder alone skips bad characters. */
export function decodeBase64UrlStrict(s: string): Buffer | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return undefined;
  return Buffer.from(s, 'base64url');
}

const timeString: FieldDecoder<string> = (v, f) => {
  const s = str(v, f);
  if (parseRfc3339(s) === undefined) throw new TypeError(`${f}: not an RFC 3339 time`);
  return s;
};

const RECORD_SPEC = { agent: str, scope: strings, delegated_at: timeString, signature: str };
const CLAIMS_SPEC = {
  iss: str,
  sub: str,
  aud: strings,
  exp: int,
  nbf: int,
  iat: int,
  jti: str,
  sid: str,
  scope: strings,
  task_id: str,
  orch_id: str,
  delegation_chain: sliceOf(structOf(RECORD_SPEC), {}),
  chain_hash: str,
};

function decodeClaims(json: string): Claims {
  const d = decodeStruct(parseOnlyValue(json), CLAIMS_SPEC);
  const chain = d.delegation_chain?.map((r) => ({
    agent: r.agent ?? '',
    scope: r.scope ?? null,
    delegated_at: r.delegated_at ?? '0001-01-01T00:00:00Z',
    signature: r.signature ?? '',
  }));
  return {
    iss: d.iss ?? '',
    sub: d.sub ?? '',
    aud: d.aud,
    exp: d.exp ?? 0,
    nbf: d.nbf ?? 0,
    iat: d.iat ?? 0,
    jti: d.jti ?? '',
    sid: d.sid,
    scope: d.scope ?? null,
    task_id: d.task_id,
    orch_id: d.orch_id,
    delegation_chain: chain,
    chain_hash: d.chain_hash,
  };
}

export type VerifyResult = { ok: true; claims: Claims } | { ok: false; reason: string };

/**
 * Signature and claim checks of the broker (reference §4.4), without revocation: alg must be
 * EdDSA, a present kid must be ours (an absent one is accepted), no clock leeway — valid while
 * now <= exp and, when nbf is set, now >= nbf — and `iss` only when an issuer is configured.
 */
export function verifyJwt(token: string, key: SigningKey, nowSec: number, issuer: string): VerifyResult {
  const parts = token.split('.');
  if (parts.length < 3) return { ok: false, reason: 'malformed token' };
  // Go splits into at most three parts: extra dots stay in the signature and spoil its encoding.
  const [h, p] = parts as [string, string];
  const s = parts.slice(2).join('.');
  let alg: string | undefined;
  let kid: string | undefined;
  try {
    const hb = decodeBase64UrlStrict(h);
    if (!hb) return { ok: false, reason: 'malformed header encoding' };
    const head = decodeStruct(parseOnlyValue(hb.toString('utf8')), { alg: str, typ: str, kid: str });
    alg = head.alg;
    kid = head.kid;
  } catch {
    return { ok: false, reason: 'malformed header' };
  }
  if (alg !== 'EdDSA') return { ok: false, reason: 'unsupported algorithm' };
  if (kid && kid !== key.kid) return { ok: false, reason: 'unknown key id' };
  const sig = decodeBase64UrlStrict(s);
  if (sig?.length !== 64) return { ok: false, reason: 'malformed signature' };
  if (!verify(null, Buffer.from(`${h}.${p}`, 'utf8'), key.publicKey, sig)) return { ok: false, reason: 'invalid signature' };
  const pb = decodeBase64UrlStrict(p);
  if (!pb) return { ok: false, reason: 'malformed payload encoding' };
  let claims: Claims;
  try {
    claims = decodeClaims(pb.toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed claims' };
  }
  if (claims.sub === '') return { ok: false, reason: 'missing subject' };
  if (claims.jti === '') return { ok: false, reason: 'missing jti' };
  if (claims.exp <= 0) return { ok: false, reason: 'missing expiry' };
  if (nowSec > claims.exp) return { ok: false, reason: 'token expired' };
  if (claims.nbf !== 0 && nowSec < claims.nbf) return { ok: false, reason: 'token not yet valid' };
  if (issuer !== '' && claims.iss !== issuer) return { ok: false, reason: 'issuer mismatch' };
  return { ok: true, claims };
}
