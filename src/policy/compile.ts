/**
 * Compiles validated policy files into one generation: every cross-file rule is checked here and
 * all problems are reported together; the result is a matcher that only compares precomputed data.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import type { LoadedPolicies, PolicySource } from '../config/load.js';
import type { ConnectorInput, RouteInput } from '../config/schema.js';
import { type ConfigProblem, ConfigError } from '../errors.js';
import { buildMatcher, type Endpoint, type RouteEngine, specificityKey } from './matcher.js';
import {
  type HostPattern,
  hostMatches,
  hostPatternText,
  parseHostPattern,
  parsePathTemplate,
  parseScopeTemplate,
  type ScopeTemplate,
} from './template.js';
import type { CompiledRoute, RouteMatcher } from './types.js';

export type { RouteEngine } from './matcher.js';

export interface SourcePosition {
  file: string;
  line: number;
  col: number;
}

export type Origin = { scheme: 'http' | 'https'; host: string; port: number };

export interface CompiledPolicy {
  matcher: RouteMatcher;
  routes: CompiledRoute[];
  connectors: Array<{ def: ConnectorInput; source: SourcePosition }>;
  passThrough: Array<{ host: string; port: number; scopes: string[]; source: SourcePosition }>;
  digest: string;
  /** Upstream origin of a reverse mount. */
  mountUpstream(mount: string): Origin | undefined;
  /** The compiled form of a route, for explain. */
  engineOf(route: CompiledRoute): RouteEngine | undefined;
}

const at = (p: SourcePosition) => `${p.file}:${p.line}:${p.col}`;

export function compilePolicy(loaded: LoadedPolicies): CompiledPolicy {
  const problems: ConfigProblem[] = [];
  const connectors = compileConnectors(loaded.sources, problems);
  const known = new Map(connectors.map((c) => [c.def.name, c]));
  const engines: RouteEngine[] = [];
  const mounts: MountUse[] = [];
  const ids = new Map<string, SourcePosition>();
  for (const src of loaded.sources) {
    src.policy.routes.forEach((r, i) => {
      const source = { file: src.file, ...src.positions.value(['routes', i]) };
      const first = ids.get(r.id);
      if (first) problems.push({ ...source, message: `duplicate route id "${r.id}" (first defined at ${at(first)})` });
      else ids.set(r.id, source);
      const e = compileRoute(src, r, i, known, problems, mounts);
      if (!e) return;
      e.order = engines.length;
      engines.push(e);
    });
  }
  checkMounts(mounts, problems);
  checkOverlaps(engines, problems);
  const passThrough = compilePassThrough(loaded.sources, engines, problems);
  if (problems.length > 0) throw new ConfigError(problems.sort(byPosition));
  const byRoute = new Map(engines.map((e) => [e.route, e]));
  const upstreams = new Map<string, Origin>();
  for (const e of engines) if (e.mount && e.route.upstream) upstreams.set(e.mount, e.route.upstream);
  return {
    matcher: buildMatcher(engines),
    routes: engines.map((e) => e.route),
    connectors,
    passThrough,
    digest: loaded.digest,
    mountUpstream: (m) => upstreams.get(m),
    engineOf: (r) => byRoute.get(r),
  };
}

function byPosition(a: ConfigProblem, b: ConfigProblem): number {
  return a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.col - b.col;
}

function relativeTo(src: PolicySource) {
  const dir = dirname(resolve(src.file));
  return (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
}

function compileConnectors(sources: readonly PolicySource[], problems: ConfigProblem[]): CompiledPolicy['connectors'] {
  const out: CompiledPolicy['connectors'] = [];
  const names = new Map<string, SourcePosition>();
  for (const src of sources) {
    const abs = relativeTo(src);
    src.policy.connectors.forEach((c, i) => {
      const source = { file: src.file, ...src.positions.value(['connectors', i]) };
      const first = names.get(c.name);
      if (first) {
        problems.push({ ...source, message: `duplicate connector name "${c.name}" (first defined at ${at(first)})` });
        return;
      }
      names.set(c.name, source);
      // Secret files are relative to the policy file that names them, like every other path.
      const fix = <T extends { env: string } | { file: string }>(s: T): T => ('file' in s ? { ...s, file: abs(s.file) } : s);
      const def: ConnectorInput =
        'basic' in c ? { ...c, basic: { username: fix(c.basic.username), password: fix(c.basic.password) } } : { ...c, secret: fix(c.secret) };
      out.push({ def, source });
    });
  }
  return out;
}

function parseUpstream(url: string): Origin | string {
  const u = new URL(url);
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) return 'upstream is an origin only (scheme://host[:port]), without path or query';
  const scheme = u.protocol === 'https:' ? 'https' : 'http';
  const host = u.hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return { scheme, host, port: u.port ? Number(u.port) : scheme === 'https' ? 443 : 80 };
}

function compileRoute(
  src: PolicySource,
  r: RouteInput,
  i: number,
  connectors: ReadonlyMap<string, unknown>,
  problems: ConfigProblem[],
  mounts: MountUse[],
): RouteEngine | undefined {
  const pos = (...sub: PropertyKey[]) => ({ file: src.file, ...src.positions.value(['routes', i, ...sub]) });
  const problem = (where: SourcePosition, message: string) => problems.push({ ...where, message: `route "${r.id}": ${message}` });
  const before = problems.length;
  const source = pos();
  let host: HostPattern | undefined;
  let upstream: Origin | undefined;
  if (r.host !== undefined && (r.mount !== undefined || r.upstream !== undefined)) {
    problem(pos('host'), 'a route has either host (forward proxy) or mount + upstream (reverse), not both');
  } else if (r.host !== undefined) {
    const h = parseHostPattern(r.host);
    if (typeof h === 'string') problem(pos('host'), h);
    else host = h;
  } else if (r.mount === undefined || r.upstream === undefined) {
    problem(source, r.mount !== undefined ? 'mount needs an upstream' : r.upstream !== undefined ? 'upstream needs a mount' : 'a route needs host, or mount + upstream');
  } else {
    const u = parseUpstream(r.upstream);
    if (typeof u === 'string') problem(pos('upstream'), u);
    else {
      upstream = u;
      // Checked even when the route has other problems, so that all are reported at once.
      mounts.push({ mount: r.mount, upstream: u, text: r.upstream, id: r.id, source });
    }
  }
  if (r.port !== undefined && r.host === undefined) problem(pos('port'), 'port applies to host routes only; a reverse route takes the port from its upstream');
  if (r.scheme !== undefined && r.host === undefined) problem(pos('scheme'), 'scheme applies to host routes only; a reverse route takes the scheme from its upstream');
  const endpoints = r.host === undefined ? [] : endpointsOf(r);
  if (typeof endpoints === 'string') problem(pos('port'), endpoints);
  if (r.caFile !== undefined && upstream?.scheme === 'http') problem(pos('caFile'), 'caFile is only used for https upstreams');
  if (r.connector !== undefined && !connectors.has(r.connector)) problem(pos('connector'), `connector "${r.connector}" is not defined in any policy file`);
  const path = parsePathTemplate(r.path);
  const scopes: ScopeTemplate[] = [];
  if (Array.isArray(path)) {
    for (const m of path) problem(pos('path'), m);
  } else {
    r.scopes.forEach((s, j) => {
      const t = parseScopeTemplate(s, path.params);
      if (Array.isArray(t)) for (const m of t) problem(pos('scopes', j), m);
      else scopes.push(t);
    });
  }
  if (problems.length > before || Array.isArray(path) || typeof endpoints === 'string') return undefined;
  const def: RouteInput = { ...r };
  if (host) def.host = hostPatternText(host);
  if (r.caFile !== undefined) def.caFile = relativeTo(src)(r.caFile);
  const route: CompiledRoute = { id: r.id, source, def, pathTemplate: r.path };
  if (r.connector !== undefined) route.connector = r.connector;
  if (upstream) route.upstream = upstream;
  if (r.maxDelegationDepth !== undefined) route.maxDelegationDepth = r.maxDelegationDepth;
  const anyMethod = r.methods.includes('*');
  return {
    route,
    host,
    endpoints,
    mount: r.mount,
    path,
    anyMethod,
    methods: new Set(r.methods),
    scopes,
    order: 0,
  };
}

interface MountUse {
  mount: string;
  upstream: Origin;
  text: string;
  id: string;
  source: SourcePosition;
}

function checkMounts(uses: readonly MountUse[], problems: ConfigProblem[]): void {
  const first = new Map<string, MountUse>();
  for (const u of uses) {
    const f = first.get(u.mount);
    if (!f) {
      first.set(u.mount, u);
      continue;
    }
    if (f.upstream.scheme !== u.upstream.scheme || f.upstream.host !== u.upstream.host || f.upstream.port !== u.upstream.port) {
      problems.push({
        ...u.source,
        message: `route "${u.id}": mount ${u.mount} already maps to ${f.text} (route "${f.id}" at ${at(f.source)}); all routes of a mount name the same upstream`,
      });
    }
  }
}

/**
 * Where a host route takes requests. Without port or scheme: http on 80 and https on 443. A port
 * other than 80 and 443 says nothing of the scheme, so it must be named: taking both would send the
 * credential in clear text to a port that serves TLS whenever an agent asks with http://.
 */
function endpointsOf(r: RouteInput): Endpoint[] | string {
  if (r.port === undefined) {
    if (r.scheme === undefined) return [{ scheme: 'http', port: 80 }, { scheme: 'https', port: 443 }];
    return [{ scheme: r.scheme, port: r.scheme === 'https' ? 443 : 80 }];
  }
  const scheme = r.scheme ?? (r.port === 443 ? 'https' : r.port === 80 ? 'http' : undefined);
  if (scheme === undefined) return `port ${r.port} needs a scheme: add scheme: https (or scheme: http to allow clear text, credential included)`;
  return [{ scheme, port: r.port }];
}

/** Two host routes share a scheme and port. */
function portsOverlap(a: RouteEngine, b: RouteEngine): boolean {
  return a.endpoints.some((x) => b.endpoints.some((y) => x.scheme === y.scheme && x.port === y.port));
}

function methodsOverlap(a: RouteEngine, b: RouteEngine): boolean {
  if (a.anyMethod || b.anyMethod) return true;
  for (const m of a.methods) if (b.methods.has(m)) return true;
  return false;
}

/**
 * Equally specific routes that can match one request make the winner depend on file order:
 * refuse them. Equal specificity + same place (host pattern or mount) + same path shape and
 * literals is exactly the set of pairs that can collide; then ports and methods must intersect.
 */
function checkOverlaps(engines: readonly RouteEngine[], problems: ConfigProblem[]): void {
  const buckets = new Map<string, RouteEngine[]>();
  for (const e of engines) {
    const place = e.host ? `h:${hostPatternText(e.host)}` : `m:${e.mount}`;
    const key = `${place}\0${specificityKey(e)}\0${e.path.literals.map((l) => (l === null ? '\u0001' : l)).join('\0')}`;
    const list = buckets.get(key);
    if (list) list.push(e);
    else buckets.set(key, [e]);
  }
  for (const list of buckets.values()) {
    for (let i = 1; i < list.length; i++) {
      for (let j = 0; j < i; j++) {
        const a = list[j];
        const b = list[i];
        if (a.anyMethod !== b.anyMethod || !methodsOverlap(a, b)) continue;
        if (a.host && !portsOverlap(a, b)) continue;
        problems.push({
          ...b.route.source,
          message: `route "${b.route.id}" overlaps route "${a.route.id}" (${at(a.route.source)}): both match the same requests with equal specificity`,
        });
        break;
      }
    }
  }
}

function compilePassThrough(sources: readonly PolicySource[], engines: readonly RouteEngine[], problems: ConfigProblem[]): CompiledPolicy['passThrough'] {
  const out: CompiledPolicy['passThrough'] = [];
  const seen = new Map<string, SourcePosition>();
  for (const src of sources) {
    src.policy.passThrough.forEach((p, i) => {
      const pos = (...sub: PropertyKey[]) => ({ file: src.file, ...src.positions.value(['passThrough', i, ...sub]) });
      const source = pos();
      const before = problems.length;
      const h = parseHostPattern(p.host);
      if (typeof h === 'string') problems.push({ ...pos('host'), message: `passThrough: ${h}` });
      p.scopes.forEach((s, j) => {
        if (s.includes('{') || s.includes('}')) problems.push({ ...pos('scopes', j), message: `passThrough scope "${s}" cannot have parameters` });
        else {
          const t = parseScopeTemplate(s, new Set());
          if (Array.isArray(t)) for (const m of t) problems.push({ ...pos('scopes', j), message: m });
        }
      });
      if (typeof h === 'string' || problems.length > before) return;
      const key = `${hostPatternText(h)}:${p.port}`;
      const first = seen.get(key);
      if (first) problems.push({ ...source, message: `passThrough ${key} is listed twice (first at ${at(first)})` });
      seen.set(key, source);
      const governed = engines.find((e) => e.host && hostsOverlap(e.host, h) && e.endpoints.some((x) => x.port === p.port));
      if (governed) {
        problems.push({
          ...source,
          message: `passThrough ${key} is also governed by route "${governed.route.id}" (${at(governed.route.source)}); a host is either intercepted or passed through`,
        });
      }
      out.push({ host: hostPatternText(h), port: p.port, scopes: p.scopes, source });
    });
  }
  return out;
}

function hostsOverlap(a: HostPattern, b: HostPattern): boolean {
  if (a.kind === 'exact') return hostMatches(b, a.host);
  if (b.kind === 'exact') return hostMatches(a, b.host);
  return a.suffix.endsWith(b.suffix) || b.suffix.endsWith(a.suffix);
}
