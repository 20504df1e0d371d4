/**
 * Routing with the behaviour of Go 1.22's ServeMux that clients can observe: method patterns,
 * `GET` also answering `HEAD`, `{name}` matching one non-empty segment, 404 as plain text
 * `404 page not found`, 405 as plain text with an `Allow` header, and a 301 to the cleaned path
 * for paths with `.`/`..`/empty segments.
 */
import { posix } from 'node:path';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface RouteDef<H> {
  method: Method;
  pattern: string;
  handler: H;
}

export type RouteResult<H> =
  | { kind: 'match'; handler: H; params: Record<string, string> }
  | { kind: 'not_found' }
  | { kind: 'method_not_allowed'; allow: string };

interface Compiled<H> {
  segments: string[];
  methods: Map<string, H>;
}

export class Router<H> {
  private readonly routes: Compiled<H>[] = [];

  constructor(defs: readonly RouteDef<H>[]) {
    for (const d of defs) {
      const segments = d.pattern.split('/').slice(1);
      let r = this.routes.find((x) => x.segments.join('/') === segments.join('/'));
      if (!r) {
        r = { segments, methods: new Map() };
        this.routes.push(r);
      }
      if (r.methods.has(d.method)) throw new Error(`duplicate route ${d.method} ${d.pattern}`);
      r.methods.set(d.method, d.handler);
    }
    // Literal patterns win over wildcard ones, as in Go's "most specific pattern" rule.
    this.routes.sort((a, b) => wildcards(a) - wildcards(b));
  }

  /** `segments` are the decoded path segments after the leading `/`. */
  route(method: string, segments: readonly string[]): RouteResult<H> {
    let allowed: string[] | undefined;
    for (const r of this.routes) {
      const params = matchSegments(r.segments, segments);
      if (!params) continue;
      const h = r.methods.get(method) ?? (method === 'HEAD' ? r.methods.get('GET') : undefined);
      if (h) return { kind: 'match', handler: h, params };
      allowed ??= allowList(r.methods);
    }
    return allowed ? { kind: 'method_not_allowed', allow: allowed.join(', ') } : { kind: 'not_found' };
  }
}

function wildcards<H>(r: Compiled<H>): number {
  return r.segments.filter((s) => s.startsWith('{')).length;
}

function allowList<H>(methods: Map<string, H>): string[] {
  const out = new Set(methods.keys());
  if (out.has('GET')) out.add('HEAD');
  return [...out].sort();
}

function matchSegments(pattern: readonly string[], path: readonly string[]): Record<string, string> | undefined {
  if (pattern.length !== path.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const s = path[i]!;
    if (p.startsWith('{') && p.endsWith('}')) {
      if (s === '') return undefined;
      params[p.slice(1, -1)] = s;
    } else if (p !== s) {
      return undefined;
    }
  }
  return params;
}

/** Go's cleanPath: path.Clean, a leading `/`, and a trailing `/` kept when the input had one. */
export function cleanPath(p: string): string {
  if (p === '') return '/';
  const rooted = p.startsWith('/') ? p : `/${p}`;
  let np = posix.normalize(rooted);
  if (np.length > 1 && np.endsWith('/')) np = np.slice(0, -1);
  if (p.endsWith('/') && np !== '/') np += '/';
  return np;
}

export interface RequestTarget {
  /** Decoded path (Go's r.URL.Path). */
  path: string;
  /** Decoded segments after the leading `/`, split on the escaped path so `%2F` stays inside one. */
  segments: string[];
  query: string;
}

/** Splits an origin-form or absolute-form request target; undefined when it cannot be decoded. */
export function parseTarget(url: string): RequestTarget | undefined {
  let rest = url;
  if (!rest.startsWith('/')) {
    const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(rest);
    if (!m) return undefined;
    rest = rest.slice(m[0].length);
    if (!rest.startsWith('/')) rest = `/${rest}`;
  }
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  const rawPath = q >= 0 ? rest.slice(0, q) : rest;
  const query = q >= 0 ? rest.slice(q + 1) : '';
  try {
    const path = decodeURIComponent(rawPath);
    const segments = rawPath.split('/').slice(1).map((s) => decodeURIComponent(s));
    return { path, segments, query };
  } catch {
    return undefined;
  }
}
