/**
 * Delegation chain checks an offline verifier can make with the broker key (reference §8):
 * chain_hash, each record's broker signature, 1..5 records, and scope attenuation.
 * The broker itself never checks any of this and the JWT signature already binds the chain; checking
 * anyway turns a malformed chain from a faulty issuer into a refusal and gives the audit log a
 * chain root that is known to be genuine.
 */
import { createHash, type KeyObject, verify } from 'node:crypto';
import { DETAIL, type DelegationRecord, tokenInvalid } from './claims.js';
import { scopeIsSubset } from './scope.js';

export const MAX_DELEGATION_DEPTH = 5;

/** The exact bytes the broker signs for one record: agent|scope,scope|delegated_at. */
export function delegationMessage(record: DelegationRecord): string {
  return `${record.agent}|${record.scope.join(',')}|${record.delegated_at}`;
}

/**
 * JSON text as Go's encoding/json writes it: like JSON.stringify, plus \u escapes for <, >, &,
 * U+2028 and U+2029. Used only when the raw payload text is not at hand (online answers).
 */
export function goJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function skipWs(s: string, i: number): number {
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
    i++;
  }
  return i;
}

/** Index just past the string literal starting at s[i] === '"'. */
function endOfString(s: string, i: number): number {
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c === 0x5c) j++;
    else if (c === 0x22) return j + 1;
  }
  return -1;
}

/** Index just past the JSON value starting at s[i]. The text is already known to be valid JSON. */
function endOfValue(s: string, i: number): number {
  const c = s[i];
  if (c === '"') return endOfString(s, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (let j = i; j < s.length; j++) {
      const d = s[j];
      if (d === '"') {
        j = endOfString(s, j) - 1;
        if (j < 0) return -1;
      } else if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    return -1;
  }
  let j = i;
  while (j < s.length && !',}] \t\r\n'.includes(s[j])) j++;
  return j;
}

/**
 * The raw text of a top-level member of a JSON object (the last one if repeated, as JSON.parse
 * keeps). chain_hash is over the broker's own encoding of the chain, which the payload carries
 * verbatim; re-serializing the parsed value would differ for <, >, & and U+2028/9.
 */
export function rawMember(json: string, name: string): string | undefined {
  let i = skipWs(json, 0);
  if (json[i] !== '{') return undefined;
  let found: string | undefined;
  i = skipWs(json, i + 1);
  if (json[i] === '}') return undefined;
  for (;;) {
    if (json[i] !== '"') return undefined;
    const keyEnd = endOfString(json, i);
    if (keyEnd < 0) return undefined;
    const rawKey = json.slice(i, keyEnd);
    i = skipWs(json, keyEnd);
    if (json[i] !== ':') return undefined;
    i = skipWs(json, i + 1);
    const start = i;
    i = endOfValue(json, i);
    if (i < 0) return undefined;
    const key = rawKey.includes('\\') ? (JSON.parse(rawKey) as string) : rawKey.slice(1, -1);
    if (key === name) found = json.slice(start, i);
    i = skipWs(json, i);
    if (json[i] === '}') return found;
    if (json[i] !== ',') return undefined;
    i = skipWs(json, i + 1);
  }
}

const SIGNATURE_HEX = /^[0-9a-fA-F]{128}$/;

export interface ChainToCheck {
  chain: DelegationRecord[];
  /** The broker's encoding of the chain (raw payload text, or goJson of an online answer). */
  chainJson: string;
  chainHash: string | undefined;
  tokenScopes: readonly string[];
}

/** Throws token_invalid unless the chain is intact and properly attenuated. */
export function verifyDelegationChain(c: ChainToCheck, brokerKey: KeyObject): void {
  const { chain } = c;
  if (chain.length < 1 || chain.length > MAX_DELEGATION_DEPTH) throw tokenInvalid(DETAIL.chain);
  if (!c.chainHash) throw tokenInvalid(DETAIL.chain);
  const digest = createHash('sha256').update(c.chainJson, 'utf8').digest('hex');
  if (digest !== c.chainHash) throw tokenInvalid(DETAIL.chain);
  for (let i = 0; i < chain.length; i++) {
    const record = chain[i];
    if (!record.agent || !SIGNATURE_HEX.test(record.signature)) throw tokenInvalid(DETAIL.chain);
    const ok = verify(null, Buffer.from(delegationMessage(record), 'utf8'), brokerKey, Buffer.from(record.signature, 'hex'));
    if (!ok) throw tokenInvalid(DETAIL.chain);
    // Each delegator's grant was a subset of its own scope, so recorded scopes only ever narrow.
    if (i > 0 && !scopeIsSubset(record.scope, chain[i - 1].scope)) throw tokenInvalid(DETAIL.chain);
  }
  if (!scopeIsSubset(c.tokenScopes, chain[chain.length - 1].scope)) throw tokenInvalid(DETAIL.chain);
}
