/**
 * Local verification of an AgentWrit JWT with the broker's public key (reference §4.4).
 *
 * jose checks the compact JWS: structure, `alg` restricted to EdDSA, `crit`, and the Ed25519
 * signature. The claims are then checked here rather than by jose's JWT claim validation because
 * the broker's rules differ at the edges (a token is still valid in the second of its `exp`; Go's
 * decoder type rules) and because chain_hash needs the payload's raw text, which only the compact
 * verification result exposes.
 */
import type { KeyObject } from 'node:crypto';
import { compactVerify, type JWSHeaderParameters } from 'jose';
import { isSidecarError } from '../errors.js';
import { type ClaimRules, checkClaims, DETAIL, identityFromClaims, parseDelegationChain, tokenInvalid } from './claims.js';
import { rawMember, verifyDelegationChain } from './delegation.js';
import type { KeySource } from './keys.js';
import type { AgentIdentity } from './types.js';

const ALGORITHMS = ['EdDSA'];
const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface OfflineOptions {
  rules: ClaimRules;
  verifyDelegationChain: boolean;
}

export class OfflineVerifier {
  private readonly getKey: (header: JWSHeaderParameters) => KeyObject | Promise<KeyObject>;

  constructor(
    private readonly keys: KeySource,
    private readonly opts: OfflineOptions,
  ) {
    this.getKey = (header) => this.keys.resolve(header);
  }

  /** Resolves with the identity, or rejects with token_invalid / token_expired / broker_unavailable (JWKS URL down). */
  async verify(token: string, nowMs: number): Promise<AgentIdentity> {
    let payloadText: string;
    let key: KeyObject;
    try {
      const result = await compactVerify(token, this.getKey, { algorithms: ALGORITHMS });
      payloadText = utf8.decode(result.payload);
      key = result.key as unknown as KeyObject;
    } catch (e) {
      if (isSidecarError(e)) throw e;
      throw tokenInvalid(DETAIL.format, e);
    }
    let payload: unknown;
    try {
      payload = JSON.parse(payloadText);
    } catch (e) {
      throw tokenInvalid(DETAIL.format, e);
    }
    const identity = identityFromClaims(payload);
    checkClaims(identity, this.opts.rules, nowMs, true);
    const claims = payload as Record<string, unknown>;
    if (this.opts.verifyDelegationChain && claims.delegation_chain !== undefined && claims.delegation_chain !== null) {
      const chainJson = rawMember(payloadText, 'delegation_chain');
      if (chainJson === undefined) throw tokenInvalid(DETAIL.chain);
      verifyDelegationChain(
        {
          chain: parseDelegationChain(claims.delegation_chain) ?? [],
          chainJson,
          chainHash: identity.chainHash,
          tokenScopes: identity.scopes,
        },
        key,
      );
    }
    return identity;
  }
}
