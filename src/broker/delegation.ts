/**
 * Delegation records and chain hash (reference §8). Records are signed by the broker's key over
 * `agent|scope1,scope2|delegated_at`; `chain_hash` is SHA-256 of the chain exactly as it is
 * serialized inside the token payload (Go escaping included).
 */
import { createHash, sign } from 'node:crypto';
import { goJson } from './gojson.js';
import { type DelegRecord, recordJson } from './jwt.js';
import type { SigningKey } from './keys.js';

export const MAX_DELEGATION_DEPTH = 5;
export const DEFAULT_DELEGATION_TTL = 60;

/** Scopes in stored order, joined with commas, neither sorted nor escaped. */
export function delegationMessage(agent: string, scope: readonly string[], delegatedAt: string): string {
  return `${agent}|${scope.join(',')}|${delegatedAt}`;
}

/**
 * A new record: `agent` is the delegator, `scope` the delegator's whole scope (not the subset
 * granted), `delegatedAt` an RFC3339Nano string that is both signed and stored.
 */
export function signDelegationRecord(key: SigningKey, agent: string, scope: readonly string[], delegatedAt: string): DelegRecord {
  const sig = sign(null, Buffer.from(delegationMessage(agent, scope, delegatedAt), 'utf8'), key.privateKey);
  return { agent, scope: [...scope], delegated_at: delegatedAt, signature: sig.toString('hex') };
}

export function chainJson(chain: readonly DelegRecord[]): string {
  return goJson(chain.map(recordJson));
}

export function chainHash(chain: readonly DelegRecord[]): string {
  return createHash('sha256').update(chainJson(chain), 'utf8').digest('hex');
}
