/**
 * A small typed client for the AgentWrit v1 API (this broker or a real one): the calls an app and
 * an agent make, for tests, the demo and benchmarks. Non-2xx answers throw BrokerHttpError with
 * the problem body.
 */
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { type Dispatcher, request } from 'undici';
import type { BrokerAuditEvent } from './audit.js';
import type { Claims, DelegRecord } from './jwt.js';

export interface ProblemBody {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  instance?: string;
  error_code?: string;
  request_id?: string;
}

export class BrokerHttpError extends Error {
  override name = 'BrokerHttpError';
  constructor(
    readonly status: number,
    readonly problem: ProblemBody | undefined,
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} ${path}: HTTP ${status}${problem?.error_code ? ` ${problem.error_code}` : ''}${problem?.detail ? `: ${problem.detail}` : ''}`);
  }
}

export interface ClientOptions {
  dispatcher?: Dispatcher;
}

async function call<T>(
  base: string,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  path: string,
  opts: { token?: string; body?: unknown; client?: ClientOptions } = {},
): Promise<T> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(new URL(path, base), {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    dispatcher: opts.client?.dispatcher,
  });
  const text = await res.body.text();
  if (res.statusCode < 200 || res.statusCode > 299) {
    let problem: ProblemBody | undefined;
    try {
      problem = JSON.parse(text) as ProblemBody;
    } catch {
      problem = undefined;
    }
    throw new BrokerHttpError(res.statusCode, problem, method, path.split('?')[0]!);
  }
  return (text ? JSON.parse(text) : undefined) as T;
}

export interface TokenResponse {
  accessToken: string;
  expiresIn: number;
}

export async function adminAuth(url: string, secret: string, client?: ClientOptions): Promise<TokenResponse> {
  const r = await call<{ access_token: string; expires_in: number }>(url, 'POST', '/v1/admin/auth', { body: { secret }, client });
  return { accessToken: r.access_token, expiresIn: r.expires_in };
}

export interface CreatedApp {
  appId: string;
  clientId: string;
  clientSecret: string;
  scopes: string[];
  tokenTtl: number;
}

export async function createApp(
  url: string,
  adminToken: string,
  app: { name: string; scopes: string[]; tokenTtl?: number },
  client?: ClientOptions,
): Promise<CreatedApp> {
  const r = await call<{ app_id: string; client_id: string; client_secret: string; scopes: string[]; token_ttl: number }>(url, 'POST', '/v1/admin/apps', {
    token: adminToken,
    body: { name: app.name, scopes: app.scopes, token_ttl: app.tokenTtl },
    client,
  });
  return { appId: r.app_id, clientId: r.client_id, clientSecret: r.client_secret, scopes: r.scopes, tokenTtl: r.token_ttl };
}

export async function appAuth(url: string, clientId: string, clientSecret: string, client?: ClientOptions): Promise<TokenResponse & { scopes: string[] }> {
  const r = await call<{ access_token: string; expires_in: number; scopes: string[] }>(url, 'POST', '/v1/app/auth', {
    body: { client_id: clientId, client_secret: clientSecret },
    client,
  });
  return { accessToken: r.access_token, expiresIn: r.expires_in, scopes: r.scopes };
}

export interface LaunchTokenRequest {
  agentName: string;
  allowedScope: string[];
  maxTtl?: number;
  singleUse?: boolean;
  ttl?: number;
}

export interface LaunchToken {
  launchToken: string;
  expiresAt: string;
  policy: { allowed_scope: string[]; max_ttl: number };
}

/** `as: 'admin'` uses /v1/admin/launch-tokens (no ceiling); `'app'` uses /v1/app/launch-tokens. */
export async function createLaunchToken(
  url: string,
  bearer: string,
  req: LaunchTokenRequest,
  as: 'admin' | 'app' = 'admin',
  client?: ClientOptions,
): Promise<LaunchToken> {
  const r = await call<{ launch_token: string; expires_at: string; policy: LaunchToken['policy'] }>(url, 'POST', `/v1/${as}/launch-tokens`, {
    token: bearer,
    body: { agent_name: req.agentName, allowed_scope: req.allowedScope, max_ttl: req.maxTtl, single_use: req.singleUse, ttl: req.ttl },
    client,
  });
  return { launchToken: r.launch_token, expiresAt: r.expires_at, policy: r.policy };
}

export interface RegisteredAgent extends TokenResponse {
  agentId: string;
  privateKey: KeyObject;
}

/** Challenge, sign the hex-decoded nonce with an Ed25519 key (generated unless given), register. */
export async function registerAgent(
  url: string,
  req: { launchToken: string; orchId: string; taskId: string; requestedScope: string[]; privateKey?: KeyObject },
  client?: ClientOptions,
): Promise<RegisteredAgent> {
  const privateKey = req.privateKey ?? generateKeyPairSync('ed25519').privateKey;
  const jwk = privateKey.export({ format: 'jwk' });
  const publicRaw = Buffer.from(jwk.x ?? '', 'base64url');
  const { nonce } = await call<{ nonce: string }>(url, 'GET', '/v1/challenge', { client });
  const signature = sign(null, Buffer.from(nonce, 'hex'), privateKey);
  const r = await call<{ agent_id: string; access_token: string; expires_in: number }>(url, 'POST', '/v1/register', {
    body: {
      launch_token: req.launchToken,
      nonce,
      public_key: publicRaw.toString('base64'),
      signature: signature.toString('base64'),
      orch_id: req.orchId,
      task_id: req.taskId,
      requested_scope: req.requestedScope,
    },
    client,
  });
  return { agentId: r.agent_id, accessToken: r.access_token, expiresIn: r.expires_in, privateKey };
}

export async function delegate(
  url: string,
  token: string,
  req: { delegateTo: string; scope: string[]; ttl?: number },
  client?: ClientOptions,
): Promise<TokenResponse & { delegationChain: DelegRecord[] }> {
  const r = await call<{ access_token: string; expires_in: number; delegation_chain: DelegRecord[] }>(url, 'POST', '/v1/delegate', {
    token,
    body: { delegate_to: req.delegateTo, scope: req.scope, ttl: req.ttl },
    client,
  });
  return { accessToken: r.access_token, expiresIn: r.expires_in, delegationChain: r.delegation_chain };
}

export async function renew(url: string, token: string, client?: ClientOptions): Promise<TokenResponse> {
  const r = await call<{ access_token: string; expires_in: number }>(url, 'POST', '/v1/token/renew', { token, client });
  return { accessToken: r.access_token, expiresIn: r.expires_in };
}

export async function release(url: string, token: string, client?: ClientOptions): Promise<void> {
  await call<undefined>(url, 'POST', '/v1/token/release', { token, client });
}

export type RevocationLevel = 'token' | 'agent' | 'task' | 'chain';

export async function revoke(
  url: string,
  adminToken: string,
  level: RevocationLevel,
  target: string,
  client?: ClientOptions,
): Promise<{ revoked: boolean; level: string; target: string; count: number }> {
  return call(url, 'POST', '/v1/revoke', { token: adminToken, body: { level, target }, client });
}

export type ValidateResult = { valid: true; claims: Claims } | { valid: false; error: string };

export async function validate(url: string, token: string, client?: ClientOptions): Promise<ValidateResult> {
  return call(url, 'POST', '/v1/token/validate', { body: { token }, client });
}

export interface AuditQuery {
  agent_id?: string;
  task_id?: string;
  event_type?: string;
  outcome?: string;
  since?: string;
  until?: string;
  limit?: number;
  offset?: number;
}

export interface AuditPage {
  events: BrokerAuditEvent[];
  total: number;
  offset: number;
  limit: number;
}

export async function auditEvents(url: string, adminToken: string, query: AuditQuery = {}, client?: ClientOptions): Promise<AuditPage> {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) qs.set(k, String(v));
  const q = qs.toString();
  return call(url, 'GET', `/v1/audit/events${q ? `?${q}` : ''}`, { token: adminToken, client });
}

/** Every audit event, unfiltered, fetched page by page (what chain verification needs). */
export async function allAuditEvents(url: string, adminToken: string, client?: ClientOptions): Promise<BrokerAuditEvent[]> {
  const out: BrokerAuditEvent[] = [];
  for (;;) {
    const page = await auditEvents(url, adminToken, { offset: out.length, limit: 1000 }, client);
    out.push(...page.events);
    if (page.events.length === 0 || out.length >= page.total) return out;
  }
}

/** One-call agent token through the admin route: admin auth → launch token → register. */
export async function issueAgentToken(
  url: string,
  adminSecret: string,
  scopes: string[],
  opts: { orchId?: string; taskId?: string; maxTtl?: number } = {},
  client?: ClientOptions,
): Promise<string> {
  const admin = await adminAuth(url, adminSecret, client);
  const lt = await createLaunchToken(url, admin.accessToken, { agentName: 'agent', allowedScope: scopes, maxTtl: opts.maxTtl }, 'admin', client);
  const agent = await registerAgent(
    url,
    { launchToken: lt.launchToken, orchId: opts.orchId ?? 'orch', taskId: opts.taskId ?? 'task', requestedScope: scopes },
    client,
  );
  return agent.accessToken;
}

export { verifyAuditChain } from './audit.js';
