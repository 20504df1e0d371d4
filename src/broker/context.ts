/**
 * Everything a request handler may touch. Nonces and launch tokens live only in memory (as in the
 * real broker); apps, agents, revocations and audit events are what the state file keeps.
 */
import type { AuditLog } from './audit.js';
import type { SigningKey } from './keys.js';
import type { BrokerMetrics } from './metrics.js';
import type { RateLimiter } from './ratelimit.js';
import type { Revocations } from './revocation.js';
import type { TokenService } from './tokens.js';

export interface BrokerConfig {
  issuer: string;
  audience: string;
  trustDomain: string;
  maxTtl: number;
  adminTokenTtl: number;
  appTokenTtl: number;
  defaultTtl: number;
}

export interface BrokerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface AppRecord {
  app_id: string;
  name: string;
  client_id: string;
  secret_hash: string;
  scopes: string[];
  token_ttl: number;
  status: 'active' | 'inactive';
  created_at: string;
  updated_at: string;
  deregistered_at?: string;
}

export interface AgentRecord {
  agent_id: string;
  /** Standard base64 of the raw 32-byte Ed25519 key; stored, never used again (as in the broker). */
  public_key: string;
  orch_id: string;
  task_id: string;
  scope: string[];
  app_id: string;
  registered_at: string;
}

export interface LaunchTokenRecord {
  agent_name: string;
  allowed_scope: string[];
  max_ttl: number;
  single_use: boolean;
  expires_at_ms: number;
  app_id: string;
  created_by: string;
}

export interface BrokerContext {
  cfg: BrokerConfig;
  now: () => number;
  startedAt: number;
  key: SigningKey;
  tokens: TokenService;
  revocations: Revocations;
  audit: AuditLog;
  metrics: BrokerMetrics;
  apps: Map<string, AppRecord>;
  agents: Map<string, AgentRecord>;
  /** nonce → expiry (ms). */
  nonces: Map<string, number>;
  launchTokens: Map<string, LaunchTokenRecord>;
  adminSecretHash: string;
  adminLimiter: RateLimiter;
  appLimiter: RateLimiter;
  /**
   * Writes the state file with every change so far; resolves once that write has been tried, so a
   * reply sent after it survives a crash (at once without a state file). Failures are only logged.
   */
  persist: () => Promise<void>;
  /** False after a failed state-file write, until the next one succeeds. */
  storeHealthy: () => boolean;
  logger?: BrokerLogger;
}

/** Go's %v of a []string, used in audit details: `[a b c]`. */
export function fmtList(items: readonly string[] | null | undefined): string {
  return `[${(items ?? []).join(' ')}]`;
}
