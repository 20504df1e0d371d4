/**
 * AgentWrit claims → AgentIdentity, and the time/issuer/audience rules the broker applies
 * (reference §4.2, §4.4): valid while now <= exp and (nbf == 0 or now >= nbf), Unix seconds.
 */
import { SidecarError } from '../errors.js';
import type { AgentIdentity } from './types.js';

export const DETAIL = {
  format: 'token signature or format is invalid',
  claims: 'token claims are malformed',
  expired: 'token has expired',
  notYetValid: 'token is not yet valid',
  issuer: 'token issuer is not accepted',
  audience: 'token audience is not accepted',
  chain: 'token delegation chain is invalid',
} as const;

export function tokenInvalid(detail: string, cause?: unknown): SidecarError {
  return new SidecarError('token_invalid', detail, cause === undefined ? undefined : { cause });
}

export interface ClaimRules {
  /** Required `iss`; empty or undefined means not checked (as the broker with AA_ISSUER unset). */
  issuer?: string;
  /** Required entry of `aud`; empty or undefined means not checked. */
  audience?: string;
  leewayMs: number;
}

/**
 * Issuers, audiences and scopes repeat across the tokens of one deployment; sharing one copy keeps
 * the verified-token cache small. Bounded: when full it starts over rather than grow.
 */
const INTERN_MAX = 1024;
const INTERN_MAX_LENGTH = 256;
const interned = new Map<string, string>();
function intern(s: string): string {
  if (s.length > INTERN_MAX_LENGTH) return s;
  const hit = interned.get(s);
  if (hit !== undefined) return hit;
  if (interned.size >= INTERN_MAX) interned.clear();
  interned.set(s, s);
  return s;
}

const EMPTY: readonly string[] = Object.freeze([]);
const internedLists = new Map<string, readonly string[]>();
/**
 * Same idea for whole lists (aud is usually identical on every token, scope sets often repeat).
 * A list is only looked up when all its members were seen before: a list naming something new
 * (a customer id) is most likely unique, and its lookup key would cost more than it saves.
 */
function internList(list: string[]): readonly string[] {
  if (list.length === 0) return EMPTY;
  let seen = list.length <= 8;
  for (let i = 0; i < list.length; i++) {
    const hit = interned.get(list[i]);
    if (hit !== undefined) list[i] = hit;
    else {
      seen = false;
      list[i] = intern(list[i]);
    }
  }
  if (!seen) return Object.freeze(list);
  // JSON, not a join: scopes may hold any character (reference §6), a separator included, and
  // ["a\u0000b"] must not find the entry of ["a","b"].
  const k = JSON.stringify(list);
  if (k.length > INTERN_MAX_LENGTH) return Object.freeze(list);
  const hit = internedLists.get(k);
  if (hit) return hit;
  if (internedLists.size >= INTERN_MAX) internedLists.clear();
  const frozen = Object.freeze(list);
  internedLists.set(k, frozen);
  return frozen;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Go decodes JSON null into a zero value; anything of the wrong type makes the broker reject the token. */
function optString(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw tokenInvalid(DETAIL.claims);
  return v;
}

function optInt(v: unknown): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw tokenInvalid(DETAIL.claims);
  return v;
}

function optStringList(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw tokenInvalid(DETAIL.claims);
  for (const s of v) if (typeof s !== 'string') throw tokenInvalid(DETAIL.claims);
  return v.slice() as string[];
}

/** Structural shape of one delegation record (decoding only; signatures are checked in delegation.ts). */
export interface DelegationRecord {
  agent: string;
  scope: string[];
  delegated_at: string;
  signature: string;
}

/** Parses `delegation_chain`; absent or null → undefined. Malformed → token_invalid. */
export function parseDelegationChain(v: unknown): DelegationRecord[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw tokenInvalid(DETAIL.claims);
  const out: DelegationRecord[] = [];
  for (const r of v) {
    if (!isObject(r)) throw tokenInvalid(DETAIL.claims);
    out.push({
      agent: optString(r.agent) ?? '',
      scope: optStringList(r.scope),
      delegated_at: optString(r.delegated_at) ?? '',
      signature: optString(r.signature) ?? '',
    });
  }
  return out;
}

/**
 * Builds the identity from a decoded AgentWrit claims object (a verified JWT payload or the
 * `claims` of a positive validate answer). Checks shape only, not time, issuer or audience.
 * The result is frozen: cached identities are shared between requests.
 */
export function identityFromClaims(payload: unknown): AgentIdentity {
  if (!isObject(payload)) throw tokenInvalid(DETAIL.claims);
  const sub = optString(payload.sub);
  const jti = optString(payload.jti);
  if (!sub || !jti) throw tokenInvalid(DETAIL.claims);
  const exp = optInt(payload.exp);
  if (exp <= 0) throw tokenInvalid(DETAIL.claims);
  const chain = parseDelegationChain(payload.delegation_chain);
  const taskId = optString(payload.task_id);
  const orchId = optString(payload.orch_id);
  const chainHash = optString(payload.chain_hash);
  // Property order is fixed so identities share hidden classes; the chain members exist only on
  // delegated tokens (16 bytes less per cached undelegated token).
  const identity: AgentIdentity = {
    sub,
    jti,
    iss: intern(optString(payload.iss) ?? ''),
    aud: internList(optStringList(payload.aud)),
    exp,
    nbf: optInt(payload.nbf),
    iat: optInt(payload.iat),
    scopes: internList(optStringList(payload.scope)),
    taskId: taskId ? intern(taskId) : undefined,
    orchId: orchId ? intern(orchId) : undefined,
    delegationDepth: chain ? chain.length : 0,
  };
  if (chain) {
    const root = chain[0]?.agent;
    identity.chainRoot = root ? intern(root) : undefined;
    identity.chainHash = chainHash || undefined;
  }
  return Object.freeze(identity);
}

/** The first instant (ms) at which a token with this `exp` is expired: the broker accepts now <= exp in whole seconds. */
export function expiryDeadlineMs(exp: number, leewayMs: number): number {
  return (exp + 1) * 1000 + leewayMs;
}

/** Time, issuer and audience rules. `checkNbf` is off for broker answers: the broker's clock decided that. */
export function checkClaims(identity: AgentIdentity, rules: ClaimRules, nowMs: number, checkNbf: boolean): void {
  if (nowMs >= expiryDeadlineMs(identity.exp, rules.leewayMs)) {
    throw new SidecarError('token_expired', DETAIL.expired);
  }
  if (checkNbf && identity.nbf !== 0 && Math.floor((nowMs + rules.leewayMs) / 1000) < identity.nbf) {
    throw tokenInvalid(DETAIL.notYetValid);
  }
  if (rules.issuer && identity.iss !== rules.issuer) throw tokenInvalid(DETAIL.issuer);
  if (rules.audience && !identity.aud.includes(rules.audience)) throw tokenInvalid(DETAIL.audience);
}
