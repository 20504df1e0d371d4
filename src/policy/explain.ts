/**
 * `policy explain`: what the policy does with one request, for people. It may name routes and
 * positions in policy files, so it is never used to answer an agent.
 */
import { firstUncovered } from '../auth/scope.js';
import type { AgentIdentity } from '../auth/types.js';
import type { CompiledPolicy } from './compile.js';
import { methodMatches, portMatches, type RouteEngine } from './matcher.js';
import { hostMatches, hostPatternText, pathMatches } from './template.js';
import type { CanonicalRequest } from './types.js';

export interface Explanation {
  matched: boolean;
  routeId?: string;
  /** file:line:col of the route. */
  source?: string;
  requiredScopes: string[];
  connector?: string;
  decision?: 'allow' | 'deny';
  errorCode?: string;
  /** Human lines. */
  reasons: string[];
}

const where = (e: RouteEngine) => `${e.route.source.file}:${e.route.source.line}:${e.route.source.col}`;
function target(req: CanonicalRequest): string {
  if (req.kind === 'reverse') return `${req.mount}${req.path === '/' ? '' : req.path}`;
  const host = req.host.includes(':') ? `[${req.host}]` : req.host;
  const port = req.port === (req.scheme === 'http' ? 80 : 443) ? '' : `:${req.port}`;
  return `${req.scheme}://${host}${port}${req.path}`;
}

export function explainRequest(policy: CompiledPolicy, req: CanonicalRequest, identity?: AgentIdentity): Explanation {
  const m = policy.matcher.match(req);
  if (!m) {
    return { matched: false, requiredScopes: [], decision: 'deny', errorCode: 'no_route', reasons: whyNoMatch(policy, req) };
  }
  const r = m.route;
  const e: Explanation = {
    matched: true,
    routeId: r.id,
    source: `${r.source.file}:${r.source.line}:${r.source.col}`,
    requiredScopes: m.requiredScopes,
    reasons: [],
  };
  if (r.connector) e.connector = r.connector;
  const params = Object.entries(m.params);
  e.reasons.push(`${req.method} ${target(req)} matches route "${r.id}" (${r.pathTemplate})${params.length ? ` with ${params.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}` : ''}`);
  const deny = (code: string, reason: string) => {
    e.decision = 'deny';
    e.errorCode ??= code;
    e.reasons.push(reason);
  };
  if (m.scopeProblem) deny('scope_violation', `no token can be allowed this request: ${m.scopeProblem}`);
  if (!identity) return e;
  const missing = firstUncovered(m.requiredScopes, identity.scopes);
  if (missing !== undefined && !m.scopeProblem) deny('scope_violation', `the token's scopes do not cover ${missing}`);
  if (r.maxDelegationDepth !== undefined && identity.delegationDepth > r.maxDelegationDepth) {
    deny('delegation_too_deep', `the token's delegation depth ${identity.delegationDepth} exceeds the route's maximum ${r.maxDelegationDepth}`);
  }
  if (!e.decision) {
    e.decision = 'allow';
    e.reasons.push(`the token's scopes cover ${m.requiredScopes.join(', ')}`);
  }
  return e;
}

function whyNoMatch(policy: CompiledPolicy, req: CanonicalRequest): string[] {
  const engines = policy.routes.map((r) => policy.engineOf(r)).filter((e): e is RouteEngine => e !== undefined);
  let place: RouteEngine[];
  if (req.kind === 'reverse') {
    place = engines.filter((e) => e.mount === req.mount);
    if (place.length === 0) return [`no route is mounted at ${req.mount}`];
  } else {
    place = engines.filter((e) => e.host && hostMatches(e.host, req.host));
    if (place.length === 0) return [`no route for host ${req.host}`];
    const hosts = [...new Set(place.map((e) => hostPatternText(e.host!)))].join(', ');
    const onPort = place.filter((e) => portMatches(e, req.scheme, req.port));
    if (onPort.length === 0) {
      const ports = place.map((e) => e.endpoints.map((x) => `${x.scheme} port ${x.port}`).join(' and '));
      return [`routes exist for ${hosts} but none for ${req.scheme} port ${req.port}; they use ${[...new Set(ports)].join(', ')}`];
    }
    place = onPort;
  }
  const byPath = place.filter((e) => pathMatches(e.path, req.segments));
  if (byPath.length === 0) {
    const lines = [`no route's path template matches ${req.path}`];
    for (const e of place) lines.push(`  ${e.route.id}: ${e.route.pathTemplate} (${where(e)})`);
    return lines;
  }
  const lines = [`the path matches, but method ${req.method} is not allowed:`];
  for (const e of byPath) {
    if (!methodMatches(e, req.method)) lines.push(`  ${e.route.id}: ${e.route.pathTemplate} allows ${[...e.methods].join(', ')} (${where(e)})`);
  }
  return lines;
}

export function formatExplanation(e: Explanation): string {
  const lines: string[] = [];
  if (e.matched) {
    lines.push(`route:      ${e.routeId} (${e.source})`);
    lines.push(`scopes:     ${e.requiredScopes.join(', ')}`);
    lines.push(`connector:  ${e.connector ?? '(none)'}`);
  } else {
    lines.push('route:      (none)');
  }
  if (e.decision) lines.push(`decision:   ${e.decision}${e.errorCode ? ` (${e.errorCode})` : ''}`);
  for (const r of e.reasons) lines.push(`  ${r}`);
  return `${lines.join('\n')}\n`;
}
