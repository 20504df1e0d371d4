/**
 * The three small languages of a route: host patterns, path templates and scope templates.
 * Each is parsed once at load (every problem reported) into a form that matches without parsing.
 */
import { isIPv4 } from 'node:net';
import { canonicalIPv6 } from '../ipv6.js';
import { parseScope } from '../auth/scope.js';

// ---------------------------------------------------------------------------------------------
// Hosts

export type HostPattern =
  | { kind: 'exact'; host: string }
  /** `*.example.com`: suffix ".example.com"; matches one or more labels before it, never the bare suffix. */
  | { kind: 'wildcard'; suffix: string; labels: number };

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

function isHostname(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  for (const label of h.split('.')) if (!LABEL.test(label)) return false;
  return true;
}

/** Parses a route or pass-through host; returns an error message when it is not valid. */
export function parseHostPattern(input: string): HostPattern | string {
  const h = input.toLowerCase();
  // IPv6 in one spelling, as requests are read (canonical.ts): one address, one host.
  const v6 = canonicalIPv6(h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h);
  if (v6 !== undefined) return { kind: 'exact', host: v6 };
  if (isIPv4(h)) return { kind: 'exact', host: h };
  if (h.endsWith('.')) return `host "${input}" must not end with a dot`;
  if (h.startsWith('*.')) {
    const suffix = h.slice(2);
    if (!isHostname(suffix)) return `host "${input}": "${suffix}" is not a valid host name`;
    return { kind: 'wildcard', suffix: `.${suffix}`, labels: suffix.split('.').length };
  }
  if (h.includes('*')) return `host "${input}": the only wildcard allowed is a leading "*." (e.g. *.example.com)`;
  if (h.includes(':')) return `host "${input}" must not include a port; use the route's port key`;
  if (!isHostname(h)) return `host "${input}" is not a valid host name`;
  return { kind: 'exact', host: h };
}

export function hostMatches(p: HostPattern, host: string): boolean {
  if (p.kind === 'exact') return p.host === host;
  return host.length > p.suffix.length && host.endsWith(p.suffix);
}

export function hostPatternText(p: HostPattern): string {
  return p.kind === 'exact' ? p.host : `*${p.suffix}`;
}

// ---------------------------------------------------------------------------------------------
// Paths

/** Segment kinds, ordered by specificity: a literal beats a parameter beats a rest parameter. */
export const LITERAL = 2;
export const PARAM = 1;
export const REST = 0;

export interface PathTemplate {
  source: string;
  /**
   * One entry per fixed segment: the decoded literal, or null for a {param}. A template with a
   * trailing slash ("/a/") ends with the literal "" and so is distinct from "/a": the request
   * "/a/" has segments ["a", ""] and "/a" has ["a"]; the root "/" has no segment at all.
   */
  literals: (string | null)[];
  /** Parameter name per fixed segment (undefined for literals). */
  names: (string | undefined)[];
  /** Name of the final {name*}, which takes one or more remaining segments. */
  rest?: string;
  /** Specificity key, one kind per segment (rest included). */
  kinds: number[];
  params: Set<string>;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parsePathTemplate(source: string): PathTemplate | string[] {
  const errors: string[] = [];
  const t: PathTemplate = { source, literals: [], names: [], kinds: [], params: new Set() };
  if (!source.startsWith('/')) return [`path "${source}" must start with "/"`];
  if (/[?#]/.test(source)) return [`path "${source}": a template holds no query or fragment`];
  const segs = source === '/' ? [] : source.slice(1).split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    const last = i === segs.length - 1;
    if (t.rest !== undefined) {
      errors.push(`path "${source}": {${t.rest}*} must be the last segment`);
      break;
    }
    const param = /^\{([^{}]*)\}$/.exec(s);
    if (param) {
      let name = param[1];
      const isRest = name.endsWith('*');
      if (isRest) name = name.slice(0, -1);
      if (!NAME.test(name)) {
        errors.push(`path "${source}": parameter name "${name}" must match [A-Za-z_][A-Za-z0-9_]*`);
        continue;
      }
      if (t.params.has(name)) errors.push(`path "${source}": parameter {${name}} appears twice`);
      t.params.add(name);
      if (isRest) {
        t.rest = name;
        t.kinds.push(REST);
      } else {
        t.literals.push(null);
        t.names.push(name);
        t.kinds.push(PARAM);
      }
      continue;
    }
    if (s.includes('{') || s.includes('}')) {
      errors.push(`path "${source}": a parameter must be a whole segment ("${s}")`);
      continue;
    }
    if (s === '' && !last) {
      errors.push(`path "${source}": empty segment ("//")`);
      continue;
    }
    let lit: string;
    try {
      lit = decodeURIComponent(s);
    } catch {
      errors.push(`path "${source}": invalid percent-encoding in "${s}"`);
      continue;
    }
    if (lit === '.' || lit === '..') errors.push(`path "${source}": dot segments are not allowed`);
    else if (lit.includes('/') || lit.includes('\\')) errors.push(`path "${source}": encoded "/" or "\\" in "${s}"`);
    t.literals.push(lit);
    t.names.push(undefined);
    t.kinds.push(LITERAL);
  }
  return errors.length > 0 ? errors : t;
}

/** Does the template match these decoded segments? No allocation. */
export function pathMatches(t: PathTemplate, segments: readonly string[]): boolean {
  const n = t.literals.length;
  if (t.rest === undefined ? segments.length !== n : segments.length <= n) return false;
  for (let i = 0; i < n; i++) {
    const lit = t.literals[i];
    if (lit === null) {
      if (segments[i] === '') return false;
    } else if (lit !== segments[i]) return false;
  }
  // A rest parameter needs a non-empty value: "/a/" does not match "/a/{r*}".
  return t.rest === undefined || segments.length > n + 1 || segments[n] !== '';
}

/** Parameter values of a matching request (call after pathMatches). */
export function pathParams(t: PathTemplate, segments: readonly string[]): Record<string, string> {
  // No prototype: a parameter named __proto__ is a value like any other.
  const params: Record<string, string> = Object.create(null);
  const n = t.literals.length;
  for (let i = 0; i < n; i++) {
    const name = t.names[i];
    if (name !== undefined) params[name] = segments[i];
  }
  if (t.rest !== undefined) params[t.rest] = n === segments.length - 1 ? segments[n] : segments.slice(n).join('/');
  return params;
}

// ---------------------------------------------------------------------------------------------
// Scopes

/** A scope part: literal text and parameter references, in order. */
type Piece = string | { param: string };

export interface ScopeTemplate {
  source: string;
  /** Set when the template has no parameter: no work at match time. */
  constant?: string;
  /** action, resource, identifier. */
  parts: [Piece[], Piece[], Piece[]];
  /** Which parts are the literal "*" in the template (the only way a part may be "*"). */
  literalStar: [boolean, boolean, boolean];
}

/**
 * A scope template must be a valid AgentWrit scope before substitution, so the split into
 * action:resource:identifier is decided by the policy author, never by a request.
 */
export function parseScopeTemplate(source: string, params: ReadonlySet<string>): ScopeTemplate | string[] {
  const parsed = parseScope(source);
  if (!parsed) return [`scope "${source}" is not of the form action:resource:identifier (three non-empty parts)`];
  const errors: string[] = [];
  const raw = [parsed.action, parsed.resource, parsed.identifier];
  const parts = raw.map((p) => parsePart(source, p, params, errors)) as [Piece[], Piece[], Piece[]];
  if (errors.length > 0) return errors;
  const t: ScopeTemplate = { source, parts, literalStar: [raw[0] === '*', raw[1] === '*', raw[2] === '*'] };
  if (parts.every((p) => p.every((x) => typeof x === 'string'))) t.constant = source;
  return t;
}

function parsePart(source: string, part: string, params: ReadonlySet<string>, errors: string[]): Piece[] {
  const pieces: Piece[] = [];
  let i = 0;
  while (i < part.length) {
    const open = part.indexOf('{', i);
    const close = part.indexOf('}', i);
    if (close >= 0 && (open < 0 || close < open)) {
      errors.push(`scope "${source}": unmatched "}"`);
      return pieces;
    }
    if (open < 0) {
      pieces.push(part.slice(i));
      break;
    }
    if (close < 0) {
      errors.push(`scope "${source}": unmatched "{"`);
      return pieces;
    }
    if (open > i) pieces.push(part.slice(i, open));
    const name = part.slice(open + 1, close);
    if (!NAME.test(name)) errors.push(`scope "${source}": "{${name}}" is not a parameter reference (use {name})`);
    else if (!params.has(name)) errors.push(`scope "${source}": {${name}} is not a parameter of the route's path`);
    else pieces.push({ param: name });
    i = close + 1;
  }
  return pieces;
}

export interface FilledScope {
  scope: string;
  /** Why no token may be allowed this scope; undefined when it is fine. */
  problem?: string;
}

const PART_NAMES = ['action', 'resource', 'identifier'] as const;

/** Fills a template with decoded parameter values, refusing values that would change its meaning. */
export function fillScope(t: ScopeTemplate, params: Readonly<Record<string, string>>): FilledScope {
  if (t.constant !== undefined) return { scope: t.constant };
  let problem: string | undefined;
  const out: string[] = ['', '', ''];
  for (let p = 0; p < 3; p++) {
    let s = '';
    for (const piece of t.parts[p]) {
      if (typeof piece === 'string') {
        s += piece;
        continue;
      }
      const v = params[piece.param] ?? '';
      // Identifiers keep colons (AgentWrit splits on the first two only); action/resource may not.
      if (p < 2 && v.includes(':') && !problem) problem = `value of {${piece.param}} contains ":" and cannot be part of a scope ${PART_NAMES[p]}`;
      s += v;
    }
    if (s === '*' && !t.literalStar[p] && !problem) problem = `value of the scope ${PART_NAMES[p]} would be the wildcard "*"`;
    if (s === '' && !problem) problem = `scope ${PART_NAMES[p]} would be empty`;
    out[p] = s;
  }
  return { scope: `${out[0]}:${out[1]}:${out[2]}`, problem };
}
