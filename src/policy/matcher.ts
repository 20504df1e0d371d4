/**
 * The hot-path route matcher. Routes are indexed by exact host, then wildcard suffix (longest
 * first), or by mount; each index entry is sorted most specific first, so the first route that
 * matches is the winner (equally specific overlapping routes were refused at compile time).
 */
import type { CanonicalRequest, CompiledRoute, RouteMatch, RouteMatcher } from './types.js';
import { fillScope, type HostPattern, hostMatches, type PathTemplate, pathMatches, pathParams, type ScopeTemplate } from './template.js';

export interface RouteEngine {
  route: CompiledRoute;
  host?: HostPattern;
  /** Host routes: the scheme and port pairs requests may use (compile.ts endpointsOf); none for reverse routes. */
  endpoints: readonly Endpoint[];
  mount?: string;
  path: PathTemplate;
  anyMethod: boolean;
  methods: ReadonlySet<string>;
  scopes: ScopeTemplate[];
  /** Definition order, a stable last tie-break. */
  order: number;
}

export function specificityKey(e: RouteEngine): string {
  return e.path.kinds.join('');
}

/** Negative when `a` is more specific than `b`. */
export function compareSpecificity(a: RouteEngine, b: RouteEngine): number {
  const ka = a.path.kinds;
  const kb = b.path.kinds;
  const n = Math.min(ka.length, kb.length);
  for (let i = 0; i < n; i++) if (ka[i] !== kb[i]) return kb[i] - ka[i];
  if (ka.length !== kb.length) return kb.length - ka.length;
  if (a.anyMethod !== b.anyMethod) return a.anyMethod ? 1 : -1;
  return a.order - b.order;
}

export interface Endpoint {
  scheme: 'http' | 'https';
  port: number;
}

/** The route takes requests of this scheme on this port: a credential never crosses to the other scheme. */
export function portMatches(e: RouteEngine, scheme: 'http' | 'https', port: number): boolean {
  for (const x of e.endpoints) if (x.port === port && x.scheme === scheme) return true;
  return false;
}

export function methodMatches(e: RouteEngine, method: string): boolean {
  // "*" is every method but TRACE: an upstream that answers TRACE echoes the request, the injected
  // credential included, back to the agent.
  return (e.anyMethod && method !== 'TRACE') || e.methods.has(method);
}

/** Parameters and filled scopes of a route known to match. */
export function buildMatch(e: RouteEngine, req: CanonicalRequest): RouteMatch {
  const params = pathParams(e.path, req.segments);
  const requiredScopes: string[] = new Array(e.scopes.length);
  let scopeProblem: string | undefined;
  for (let i = 0; i < e.scopes.length; i++) {
    const f = fillScope(e.scopes[i], params);
    requiredScopes[i] = f.scope;
    if (f.problem !== undefined && scopeProblem === undefined) scopeProblem = f.problem;
  }
  const m: RouteMatch = { route: e.route, params, requiredScopes };
  if (scopeProblem !== undefined) m.scopeProblem = scopeProblem;
  return m;
}

function firstMatch(list: readonly RouteEngine[], req: CanonicalRequest, checkPort: boolean): RouteEngine | undefined {
  for (const e of list) {
    if (checkPort && !portMatches(e, req.scheme, req.port)) continue;
    if (!methodMatches(e, req.method)) continue;
    if (pathMatches(e.path, req.segments)) return e;
  }
  return undefined;
}

export function buildMatcher(engines: readonly RouteEngine[]): RouteMatcher {
  const exact = new Map<string, RouteEngine[]>();
  const wildByText = new Map<string, { suffix: string; labels: number; list: RouteEngine[] }>();
  const reverse = new Map<string, RouteEngine[]>();
  const push = <K>(m: Map<K, RouteEngine[]>, k: K, e: RouteEngine) => {
    const l = m.get(k);
    if (l) l.push(e);
    else m.set(k, [e]);
  };
  for (const e of engines) {
    if (e.mount !== undefined) push(reverse, e.mount, e);
    else if (e.host?.kind === 'exact') push(exact, e.host.host, e);
    else if (e.host?.kind === 'wildcard') {
      const w = wildByText.get(e.host.suffix);
      if (w) w.list.push(e);
      else wildByText.set(e.host.suffix, { suffix: e.host.suffix, labels: e.host.labels, list: [e] });
    }
  }
  for (const l of exact.values()) l.sort(compareSpecificity);
  for (const l of reverse.values()) l.sort(compareSpecificity);
  const wild = [...wildByText.values()].sort((a, b) => b.labels - a.labels);
  for (const w of wild) w.list.sort(compareSpecificity);
  const wildPatterns = wild.map((w) => ({ kind: 'wildcard' as const, suffix: w.suffix, labels: w.labels }));
  const mounts: readonly string[] = Object.freeze([...reverse.keys()].sort((a, b) => b.length - a.length || (a < b ? -1 : 1)));

  return {
    match(req) {
      if (req.kind === 'reverse') {
        const list = req.mount === undefined ? undefined : reverse.get(req.mount);
        const e = list && firstMatch(list, req, false);
        return e && buildMatch(e, req);
      }
      const list = exact.get(req.host);
      let e = list && firstMatch(list, req, true);
      if (!e) {
        for (let i = 0; i < wild.length && !e; i++) {
          if (hostMatches(wildPatterns[i], req.host)) e = firstMatch(wild[i].list, req, true);
        }
      }
      return e && buildMatch(e, req);
    },
    governsHost(host, port) {
      let h = host.toLowerCase();
      if (h.charCodeAt(0) === 91) h = h.slice(1, -1);
      // Either scheme: the tunnel's first byte tells TLS from plain HTTP, and the match then needs that scheme.
      const any = (l: readonly RouteEngine[]) => l.some((e) => e.endpoints.some((x) => x.port === port));
      const l = exact.get(h);
      if (l && any(l)) return true;
      for (let i = 0; i < wild.length; i++) if (hostMatches(wildPatterns[i], h) && any(wild[i].list)) return true;
      return false;
    },
    mounts: () => mounts,
  };
}
