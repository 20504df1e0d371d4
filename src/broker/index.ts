/**
 * An AgentWrit-compatible broker for development, tests, demos and CI — not a production broker.
 * It serves the AgentWrit v1 API with the real broker's shapes, status codes and quirks, plus
 * one extension the real broker lacks: `GET /.well-known/jwks.json`.
 */
import type { Server } from 'node:http';
import { AuditLog, verifyAuditChain } from './audit.js';
import type { AgentRecord, AppRecord, BrokerConfig, BrokerContext, BrokerLogger, LaunchTokenRecord } from './context.js';
import { generateSigningKey, loadOrCreateSigningKey, type SigningKey, writePublicKey } from './keys.js';
import { createBrokerMetrics } from './metrics.js';
import { RateLimiter } from './ratelimit.js';
import { Revocations } from './revocation.js';
import { ADMIN_SCOPES } from './handlers/auth.js';
import { issueLaunchToken } from './handlers/launch.js';
import { brokerRouter } from './routes.js';
import { hashSecret } from './secrets.js';
import { type BrokerTls, createBrokerServer } from './server.js';
import { validTrustDomain } from './spiffe.js';
import { loadState, type StateSnapshot, StateWriter } from './state.js';
import { rfc3339Nano } from './timefmt.js';
import { TokenService } from './tokens.js';

export type { BrokerAuditEvent } from './audit.js';
export { verifyAuditChain } from './audit.js';
export type { BrokerLogger } from './context.js';

export interface BrokerOptions {
  /** "HOST:PORT" (IPv6 as "[::1]:PORT"), default "127.0.0.1:8080"; port 0 picks a free port. */
  listen?: string;
  /** PKCS#8 Ed25519 PEM; generated (mode 0600, exclusive create) if absent. Unset: an in-memory key. */
  signingKeyFile?: string;
  /** Where to write the SPKI public key PEM, for sidecars' `broker.publicKeyFile`. */
  publicKeyOut?: string;
  adminSecret: string;
  /** Keeps apps, agents, revocations and audit events across restarts. Unset: memory only. */
  stateFile?: string;
  issuer?: string;
  audience?: string;
  trustDomain?: string;
  maxTtl?: number;
  adminTokenTtl?: number;
  appTokenTtl?: number;
  defaultTtl?: number;
  /** Serve HTTPS (AA_TLS_MODE tls) or HTTPS requiring client certificates (mtls); default plain HTTP. */
  tls?: BrokerTls;
  /**
   * AA_SEED_TOKENS: at startup, make a launch token (agent name "seed-agent", scope `*:*:*`,
   * valid and max_ttl 3600 s, single use) and an admin token (the admin scopes, 3600 s, never an
   * `aud`, so with an audience configured it is refused by Bearer endpoints, as in the broker).
   */
  seedTokens?: boolean;
  /** Millisecond clock (tests). */
  now?: () => number;
  logger?: BrokerLogger;
}

export interface RunningBroker {
  url: string;
  port: number;
  kid: string;
  publicKeyPem: string;
  /** Present when started with `seedTokens`. */
  seed?: SeedTokens;
  close(): Promise<void>;
}

export interface SeedTokens {
  launchToken: string;
  adminToken: string;
}

const SEED_TTL = 3600;

function seedTokens(ctx: BrokerContext): SeedTokens {
  const launch = issueLaunchToken(ctx, {
    agentName: 'seed-agent',
    allowedScope: ['*:*:*'],
    maxTtl: SEED_TTL,
    ttl: SEED_TTL,
    appId: '',
    createdBy: 'seed',
  });
  const admin = ctx.tokens.issue({ sub: 'admin', scope: [...ADMIN_SCOPES], ttl: SEED_TTL, aud: [] });
  return { launchToken: launch.launch_token, adminToken: admin.token };
}

export const DEFAULT_LISTEN = '127.0.0.1:8080';
const PLACEHOLDER_SECRET = 'change-me-in-production';

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`invalid listen address "${listen}": expected HOST:PORT`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

function checkAdminSecret(secret: string): void {
  if (!secret) throw new Error('an admin secret is required (AA_ADMIN_SECRET)');
  if (secret === PLACEHOLDER_SECRET) throw new Error(`refusing the placeholder admin secret "${PLACEHOLDER_SECRET}"`);
  if (/^\$2[aby]\$\d\d\$.{53}$/.test(secret)) {
    throw new Error('bcrypt-hashed admin secrets are not supported by this development broker; pass the secret itself');
  }
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'the address is already in use' : e.message;
      reject(new Error(`cannot listen on ${host}:${port}: ${why}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

function restore(ctx: BrokerContext, snap: StateSnapshot): void {
  for (const a of snap.apps) ctx.apps.set(a.app_id, a);
  for (const a of snap.agents) ctx.agents.set(a.agent_id, a);
  for (const r of snap.revocations) ctx.revocations.add(r.level, r.target, r.revoked_at);
  ctx.audit.load(snap.audit);
  ctx.metrics.auditEventsLoaded.set(snap.audit.length);
  const chain = verifyAuditChain(snap.audit);
  if (!chain.ok) ctx.logger?.warn({ event: chain.id, reason: chain.reason }, 'audit chain in the state file does not verify');
}

export async function startBroker(opts: BrokerOptions): Promise<RunningBroker> {
  checkAdminSecret(opts.adminSecret);
  const { host, port } = parseListen(opts.listen ?? DEFAULT_LISTEN);
  const now = opts.now ?? Date.now;
  const cfg: BrokerConfig = {
    issuer: opts.issuer ?? '',
    audience: opts.audience ?? '',
    trustDomain: opts.trustDomain ?? 'agentwrit.local',
    maxTtl: opts.maxTtl ?? 86400,
    adminTokenTtl: opts.adminTokenTtl ?? 300,
    appTokenTtl: opts.appTokenTtl ?? 1800,
    defaultTtl: opts.defaultTtl ?? 300,
  };
  const logger = opts.logger;
  let key: SigningKey;
  if (opts.signingKeyFile) {
    const loaded = await loadOrCreateSigningKey(opts.signingKeyFile);
    key = loaded.key;
    if (loaded.created) logger?.info({ file: opts.signingKeyFile, kid: key.kid }, 'generated a new signing key');
  } else {
    key = generateSigningKey();
  }
  if (opts.publicKeyOut) await writePublicKey(opts.publicKeyOut, key);
  const snapshot = opts.stateFile ? await loadState(opts.stateFile) : undefined;

  const metrics = createBrokerMetrics();
  const revocations = new Revocations();
  const apps = new Map<string, AppRecord>();
  const agents = new Map<string, AgentRecord>();
  const audit = new AuditLog(
    () => rfc3339Nano(now()),
    (e) => {
      metrics.auditEvents.inc({ event_type: e.event_type });
      writer?.schedule();
    },
  );
  const writer = opts.stateFile
    ? new StateWriter(opts.stateFile, () => ({ version: 1, apps: [...apps.values()], agents: [...agents.values()], revocations: [...revocations.entries()], audit: [...audit.all()] }), {
        written: (sec) => metrics.auditWriteDuration.observe(sec),
        failed: (err) => {
          metrics.dbErrors.inc({ operation: 'write_state' });
          logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'state file write failed');
        },
      })
    : undefined;
  const ctx: BrokerContext = {
    cfg,
    now,
    startedAt: now(),
    key,
    tokens: new TokenService(key, cfg, now, revocations, metrics),
    revocations,
    audit,
    metrics,
    apps,
    agents,
    nonces: new Map<string, number>(),
    launchTokens: new Map<string, LaunchTokenRecord>(),
    adminSecretHash: await hashSecret(opts.adminSecret),
    adminLimiter: new RateLimiter(5, 10, now),
    appLimiter: new RateLimiter(10 / 60, 3, now),
    persist: () => writer?.persisted() ?? Promise.resolve(),
    storeHealthy: () => writer?.healthy() ?? true,
    logger,
  };
  if (snapshot) restore(ctx, snapshot);
  const seed = opts.seedTokens ? seedTokens(ctx) : undefined;
  if (!validTrustDomain(cfg.trustDomain)) {
    logger?.warn({ trust_domain: cfg.trustDomain }, 'trust domain is not a valid SPIFFE trust domain; registrations will fail');
  }

  const server = createBrokerServer(ctx, brokerRouter(), opts.tls);
  const boundPort = await listen(server, host, port);
  // Expired nonces and launch tokens are unusable anyway; dropping them bounds memory.
  const sweeper = setInterval(() => {
    const t = now();
    for (const [n, exp] of ctx.nonces) if (t > exp) ctx.nonces.delete(n);
    for (const [k, lt] of ctx.launchTokens) if (t > lt.expires_at_ms) ctx.launchTokens.delete(k);
  }, 60_000);
  sweeper.unref();

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      clearInterval(sweeper);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await writer?.flush();
    })();
    return closing;
  };
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return { url: `${opts.tls ? 'https' : 'http'}://${urlHost}:${boundPort}`, port: boundPort, kid: key.kid, publicKeyPem: key.publicKeyPem, seed, close };
}
