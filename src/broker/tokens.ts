/**
 * Token issue, verification (signature, claims, then the four revocation levels) and renewal.
 */
import { randomBytes } from 'node:crypto';
import { type Claims, type DelegRecord, encodeJwt, type VerifyResult, verifyJwt } from './jwt.js';
import type { SigningKey } from './keys.js';
import type { BrokerMetrics } from './metrics.js';
import type { Revocations } from './revocation.js';

export interface TtlConfig {
  issuer: string;
  audience: string;
  /** Global clamp in seconds; 0 or negative disables it. */
  maxTtl: number;
  /** Used only when a caller passes a TTL of 0 or less. */
  defaultTtl: number;
}

export interface IssueParams {
  sub: string;
  scope: string[] | null;
  ttl: number;
  /** Copied from a predecessor/delegator; otherwise the configured audience. */
  aud?: string[];
  taskId?: string;
  orchId?: string;
  sid?: string;
  chain?: DelegRecord[];
  chainHash?: string;
}

export interface Issued {
  token: string;
  claims: Claims;
  expiresIn: number;
}

export function effectiveTtl(ttl: number, cfg: Pick<TtlConfig, 'maxTtl' | 'defaultTtl'>): number {
  let t = ttl > 0 ? ttl : cfg.defaultTtl;
  if (cfg.maxTtl > 0 && t > cfg.maxTtl) t = cfg.maxTtl;
  return t;
}

/** The claim set of a new token; `iat`, `jti` and the already-clamped TTL are given. */
export function newClaims(p: IssueParams & { issuer: string; iat: number; jti: string }): Claims {
  return {
    iss: p.issuer,
    sub: p.sub,
    aud: p.aud,
    exp: p.iat + p.ttl,
    nbf: p.iat,
    iat: p.iat,
    jti: p.jti,
    sid: p.sid,
    scope: p.scope,
    task_id: p.taskId,
    orch_id: p.orchId,
    delegation_chain: p.chain,
    chain_hash: p.chainHash,
  };
}

/** Distinct first scopes labelled in agentwrit_tokens_issued_total, and the longest labelled. */
const SCOPE_LABELS_MAX = 1000;
const SCOPE_LABEL_MAX = 256;

export class TokenService {
  private readonly scopeLabels = new Set<string>();

  constructor(
    readonly key: SigningKey,
    private readonly cfg: TtlConfig,
    private readonly nowMs: () => number,
    private readonly revocations: Revocations,
    private readonly metrics: BrokerMetrics,
  ) {}

  nowSec(): number {
    return Math.floor(this.nowMs() / 1000);
  }

  defaultAudience(): string[] | undefined {
    return this.cfg.audience ? [this.cfg.audience] : undefined;
  }

  issue(p: IssueParams): Issued {
    const ttl = effectiveTtl(p.ttl, this.cfg);
    const claims = newClaims({
      ...p,
      aud: p.aud ?? this.defaultAudience(),
      ttl,
      issuer: this.cfg.issuer,
      iat: this.nowSec(),
      jti: randomBytes(16).toString('hex'),
    });
    this.metrics.tokensIssued.inc({ scope: this.scopeLabel(claims.scope?.[0]) });
    return { token: encodeJwt(claims, this.key), claims, expiresIn: ttl };
  }

  /**
   * The broker labels issued tokens with their first scope, which a caller chooses (delegation,
   * registration): past SCOPE_LABELS_MAX distinct values, or SCOPE_LABEL_MAX characters, a scope
   * is counted as "other", so that callers cannot grow the metrics without end.
   */
  private scopeLabel(scope: string | undefined): string {
    if (scope === undefined) return 'none';
    if (this.scopeLabels.has(scope)) return scope;
    if (scope.length > SCOPE_LABEL_MAX || this.scopeLabels.size >= SCOPE_LABELS_MAX) return 'other';
    this.scopeLabels.add(scope);
    return scope;
  }

  /** The broker's Verify: §4.4 checks, then revocation at token, agent, task and chain level. */
  verify(token: string): VerifyResult {
    const r = verifyJwt(token, this.key, this.nowSec(), this.cfg.issuer);
    if (!r.ok) return r;
    const level = this.revocations.check(r.claims);
    if (level) return { ok: false, reason: `token revoked (level=${level})` };
    return r;
  }

  /**
   * Issues the successor of verified `old` with the same subject, audience, scope, task, chain
   * and lifetime (exp - iat). The caller revokes the predecessor first.
   */
  renew(old: Claims): Issued {
    return this.issue({
      sub: old.sub,
      scope: old.scope,
      ttl: old.exp - old.iat,
      aud: old.aud ?? [],
      taskId: old.task_id,
      orchId: old.orch_id,
      sid: old.sid,
      chain: old.delegation_chain,
      chainHash: old.chain_hash,
    });
  }
}
