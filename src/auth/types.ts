/** What the sidecar knows about the caller once its AgentWrit token is verified. Never holds the token. */
export interface AgentIdentity {
  sub: string;
  jti: string;
  iss: string;
  aud: readonly string[];
  /** Unix seconds. */
  exp: number;
  nbf: number;
  iat: number;
  scopes: readonly string[];
  taskId?: string;
  orchId?: string;
  /** Number of delegation records (0 for an undelegated token). */
  delegationDepth: number;
  /** delegation_chain[0].agent: the principal the chain-level revocation keys on. */
  chainRoot?: string;
  chainHash?: string;
}

/** Where a verification answer came from, for metrics. */
export type VerifySource = 'cache' | 'offline' | 'online';

export interface VerifyResult {
  identity: AgentIdentity;
  source: VerifySource;
}

export interface TokenVerifier {
  /**
   * Resolves with the identity, or rejects with a SidecarError:
   * token_invalid / token_expired / token_revoked (401), broker_unavailable (503).
   */
  verify(token: string): Promise<VerifyResult>;
  /**
   * The answer verify() would give at once, when it needs no work beyond a cache hit (an identity
   * checked recently enough); undefined otherwise — then call verify(). Never refuses: refusals
   * go through verify() so they are counted and explained in one place. Like verify(), a hit late
   * in the revalidation window starts the next broker call in the background.
   */
  cached(token: string): VerifyResult | undefined;
  /** Ready once key material (offline/hybrid) is loaded. */
  ready(): boolean;
  /** Number of tokens currently cached. */
  cacheSize(): number;
  close(): Promise<void>;
}

/** Callbacks the verifier reports through; telemetry implements them (no labels carry token data). */
export interface VerifierObserver {
  verification(outcome: 'ok' | 'invalid' | 'expired' | 'revoked' | 'unavailable', source: VerifySource): void;
  revalidation(seconds: number, outcome: 'valid' | 'invalid' | 'error'): void;
  /**
   * A replaced broker key file was read: 'success' when its new keys are in service (kids are
   * public thumbprints), 'failure' when the old keys stay because the file could not be used.
   */
  keyReload?(result: 'success' | 'failure', detail: { file: string; kids?: readonly string[]; reason?: string }): void;
}
