import type { RouteInput } from '../config/schema.js';

/**
 * One request after canonicalization (ingress/canonical.ts). The path here is exactly what is sent
 * upstream; `segments` are its percent-decoded segments, used for matching and scope templates.
 */
export interface CanonicalRequest {
  method: string;
  /** Scheme towards the upstream. */
  scheme: 'http' | 'https';
  /** Lower-case host, no port, IPv6 without brackets. */
  host: string;
  /** Explicit or default port. */
  port: number;
  /** Raw path as received (after the mount prefix is removed, for reverse routes), no query. */
  path: string;
  /** Percent-decoded path segments of `path` (no leading empty segment). */
  segments: string[];
  /** Raw query string without "?", or "" */
  query: string;
  /** How the request reached us. */
  kind: 'forward' | 'reverse' | 'intercepted';
  /** For reverse requests: the mount it arrived on. */
  mount?: string;
}

export interface CompiledRoute {
  id: string;
  /** Source position for explain/errors. */
  source: { file: string; line: number; col: number };
  def: RouteInput;
  /** The route's path template, as written (audit records this, never the raw path by default). */
  pathTemplate: string;
  connector?: string;
  /** For reverse routes: upstream origin. */
  upstream?: { scheme: 'http' | 'https'; host: string; port: number };
  maxDelegationDepth?: number;
}

export interface RouteMatch {
  route: CompiledRoute;
  params: Record<string, string>;
  /** Scopes required, templates filled; undefined when a parameter value is not allowed in a scope. */
  requiredScopes: string[];
  /** Why requiredScopes could not be built, when it could not. */
  scopeProblem?: string;
}

export interface RouteMatcher {
  /** Synchronous, compiled once per config generation. */
  match(req: CanonicalRequest): RouteMatch | undefined;
  /** Does any route govern this host:port, over either scheme (forward/intercepted routes)? Used for CONNECT decisions. */
  governsHost(host: string, port: number): boolean;
  /** Reverse mounts, longest first, for ingress. */
  mounts(): readonly string[];
}
