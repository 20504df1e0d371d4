/**
 * Canonicalization: the one place a request target is interpreted. Anything two HTTP
 * implementations could read differently is refused rather than normalized, so the path that was
 * matched against the policy is byte for byte the path sent upstream. Runs on every request: one
 * pass over the target and table lookups.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { canonicalIPv6 } from '../ipv6.js';
import { SidecarError } from '../errors.js';
import type { CanonicalRequest } from '../policy/types.js';
import { METHOD_OVERRIDE_DETAIL, queryHasMethodOverride } from './method-override.js';

const ambiguous = (detail: string) => new SidecarError('ambiguous_request', detail);
const bad = (detail: string) => new SidecarError('bad_request', detail);

function table(chars: string): Uint8Array {
  const t = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  return t;
}
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** RFC 3986 pchar without "%" (checked separately): unreserved, sub-delims, ":" and "@". */
const PCHAR = table(`${ALNUM}-._~!$&'()*+,;=:@`);
/** RFC 9110 token characters (methods). */
const TCHAR = table(`${ALNUM}!#$%&'*+-.^_\`|~`);
/** Host names as we accept them: letters, digits, "-", "." and "_" (seen on internal names). */
const HOSTCHAR = table(`${ALNUM}-._`);

function hex(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

function checkMethod(method: string): void {
  if (method.length === 0) throw bad('missing method');
  for (let i = 0; i < method.length; i++) {
    const c = method.charCodeAt(i);
    if (c >= 128 || TCHAR[c] === 0) throw bad('method is not a valid token');
  }
}

function refuseChar(c: number, where: string): never {
  if (c === 92) throw ambiguous(`backslash in the ${where}`);
  if (c === 35) throw ambiguous('fragment in the request target');
  if (c < 32 || c === 127) throw ambiguous(`control character in the ${where}`);
  if (c >= 128) throw ambiguous(`non-ASCII character in the ${where} (percent-encode it)`);
  throw ambiguous(`character "${String.fromCharCode(c)}" is not allowed in the ${where} (percent-encode it)`);
}

/**
 * Decoded segments of raw[start, end), which starts with "/". The root "/" has no segment; a
 * trailing slash gives a final "" segment; any other empty segment is refused.
 */
function parsePath(raw: string, start: number, end: number): string[] {
  const segments: string[] = [];
  if (end - start === 1) return segments;
  let segStart = start + 1;
  let encoded = false;
  for (let i = start + 1; i <= end; i++) {
    const c = i === end ? 47 : raw.charCodeAt(i);
    if (c === 47) {
      if (i === segStart && i !== end) throw ambiguous('empty path segment ("//")');
      segments.push(segment(raw, segStart, i, encoded));
      segStart = i + 1;
      encoded = false;
    } else if (c === 37) {
      const h = i + 2 < end ? hex(raw.charCodeAt(i + 1)) : -1;
      const l = h >= 0 ? hex(raw.charCodeAt(i + 2)) : -1;
      if (l < 0) throw ambiguous('invalid percent-encoding in the path');
      const byte = h * 16 + l;
      if (byte === 0x2f) throw ambiguous('encoded "/" (%2F) in the path');
      if (byte === 0x5c) throw ambiguous('encoded "\\" (%5C) in the path');
      if (byte === 0) throw ambiguous('encoded NUL (%00) in the path');
      if (byte < 32 || byte === 127) throw ambiguous('encoded control character in the path');
      encoded = true;
      i += 2;
    } else if (c >= 128 || PCHAR[c] === 0) {
      refuseChar(c, 'path');
    }
  }
  return segments;
}

function segment(raw: string, a: number, b: number, encoded: boolean): string {
  let s = raw.slice(a, b);
  if (encoded) {
    try {
      s = decodeURIComponent(s);
    } catch {
      throw ambiguous('invalid percent-encoding in the path (not UTF-8)');
    }
  }
  if (isDotSegment(s)) throw ambiguous('dot segment in the path');
  // Encoded twice (%252e%252e, %252f): harmless here, but an upstream that decodes again would
  // read a dot segment or another path than the one authorized.
  if (encoded && s.includes('%') && unsafeDecodedAgain(s)) {
    throw ambiguous('"%" encoded as %25 before what decodes to a dot segment, "/", "\\" or a control character (encoded twice)');
  }
  return s;
}

/**
 * Whether a decoded segment, decoded once more as a lenient decoder would (each valid %XX, the rest
 * as it is), is a dot segment or holds "/", "\", NUL or another control character.
 */
function unsafeDecodedAgain(s: string): boolean {
  let again = '';
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c === 37 && i + 2 < s.length) {
      const h = hex(s.charCodeAt(i + 1));
      const l = h >= 0 ? hex(s.charCodeAt(i + 2)) : -1;
      if (l >= 0) {
        c = h * 16 + l;
        i += 2;
        if (c === 0x2f || c === 0x5c || c < 32 || c === 127) return true;
      }
    }
    again += String.fromCharCode(c);
  }
  return isDotSegment(again);
}

/** "." or "..", also with a path parameter (";x"), which is still ".." to servlet containers. */
function isDotSegment(s: string): boolean {
  return s.charCodeAt(0) === 46 && (s === '.' || s === '..' || s.startsWith('.;') || s.startsWith('..;'));
}

function checkQuery(raw: string, start: number): void {
  for (let i = start; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c <= 32 || c >= 127 || c === 35) refuseChar(c, 'query');
  }
  if (queryHasMethodOverride(raw.slice(start))) throw ambiguous(METHOD_OVERRIDE_DETAIL('query'));
}

/** host[:port] or [v6][:port] → lower-case host without brackets and explicit or default port. */
function parseAuthority(auth: string, defaultPort: number, what: string): { host: string; port: number } {
  let host: string;
  let portText: string | undefined;
  if (auth.charCodeAt(0) === 91) {
    const close = auth.indexOf(']');
    if (close < 0) throw bad(`${what}: unterminated IPv6 address`);
    const v6 = canonicalIPv6(auth.slice(1, close));
    if (v6 === undefined) throw bad(`${what}: invalid IPv6 address`);
    host = v6;
    const after = auth.slice(close + 1);
    if (after !== '') {
      if (after.charCodeAt(0) !== 58) throw bad(`${what}: invalid authority`);
      portText = after.slice(1);
    }
  } else {
    const colon = auth.indexOf(':');
    host = colon < 0 ? auth : auth.slice(0, colon);
    if (colon >= 0) portText = auth.slice(colon + 1);
    if (host.length === 0) throw bad(`${what}: missing host`);
    if (host.charCodeAt(host.length - 1) === 46) throw ambiguous(`${what}: trailing dot in host`);
    let prevDot = true;
    let upper = false;
    for (let i = 0; i < host.length; i++) {
      const c = host.charCodeAt(i);
      if (c === 46 && prevDot) throw ambiguous(`${what}: empty label in host`);
      if (c >= 128 || HOSTCHAR[c] === 0) {
        if (c === 37) throw ambiguous(`${what}: percent-encoded host`);
        throw bad(`${what}: invalid character in host`);
      }
      prevDot = c === 46;
      if (c >= 65 && c <= 90) upper = true;
    }
    if (upper) host = host.toLowerCase();
  }
  if (portText === undefined) return { host, port: defaultPort };
  if (portText.length === 0 || portText.length > 5) throw bad(`${what}: invalid port`);
  let port = 0;
  for (let i = 0; i < portText.length; i++) {
    const d = portText.charCodeAt(i) - 48;
    if (d < 0 || d > 9) throw bad(`${what}: invalid port`);
    port = port * 10 + d;
  }
  if (port < 1 || port > 65535) throw bad(`${what}: invalid port`);
  return { host, port };
}

/** `authority`: the target's authority text when there is one; the usual identical Host header then costs nothing. */
function checkHostHeader(headers: IncomingHttpHeaders, host: string, port: number, defaultPort: number, authority?: string): void {
  const value = headers.host;
  // HTTP/1.0 may omit Host; there is then nothing to disagree with the target.
  if (value === undefined || value === authority) return;
  let h: { host: string; port: number };
  try {
    h = parseAuthority(value, defaultPort, 'Host header');
  } catch {
    throw ambiguous('Host header is not a valid host[:port]');
  }
  if (h.host !== host || h.port !== port) throw ambiguous('Host header does not match the request target');
}

/**
 * Absolute-form forward-proxy request: target like "http://api.example.com:8080/a/b?x=1". Only
 * http: (https comes through CONNECT). The Host header must name the same host and port.
 */
export function canonicalizeForward(method: string, target: string, headers: IncomingHttpHeaders): CanonicalRequest {
  checkMethod(method);
  if (!/^http:\/\//i.test(target)) {
    if (/^https:\/\//i.test(target)) throw bad('https:// requests go through CONNECT');
    throw bad('a forward-proxy request needs an absolute http:// URL');
  }
  let end = 7;
  while (end < target.length) {
    const c = target.charCodeAt(end);
    if (c === 47 || c === 63 || c === 35) break;
    end++;
  }
  const auth = target.slice(7, end);
  if (auth.includes('@')) throw ambiguous('user information in the request URI');
  const { host, port } = parseAuthority(auth, 80, 'request URI');
  if (target.charCodeAt(end) === 35) throw ambiguous('fragment in the request target');
  let q = target.indexOf('?', end);
  if (q < 0) q = target.length;
  // "http://host" and "http://host?x" address the root.
  const path = q === end ? '/' : target.slice(end, q);
  const segments = q === end ? [] : parsePath(target, end, q);
  if (q < target.length) checkQuery(target, q + 1);
  checkHostHeader(headers, host, port, 80, auth);
  return { method, scheme: 'http', host, port, path, segments, query: q < target.length ? target.slice(q + 1) : '', kind: 'forward' };
}

export type OriginContext =
  | { kind: 'reverse'; mounts: readonly string[]; upstreamOf: (mount: string) => { scheme: 'http' | 'https'; host: string; port: number } }
  | { kind: 'intercepted'; host: string; port: number };

/**
 * Origin-form request on the proxy port (reverse routes; mounts longest first) or inside an
 * intercepted tunnel (host/port are the CONNECT authority; the Host header must name it).
 * Returns undefined for a reverse request whose path is under no mount.
 */
export function canonicalizeOrigin(method: string, target: string, headers: IncomingHttpHeaders, ctx: OriginContext): CanonicalRequest | undefined {
  checkMethod(method);
  if (target.charCodeAt(0) !== 47) throw bad('expected an origin-form request target (/path)');
  let q = target.indexOf('?');
  if (q < 0) q = target.length;
  // The whole path is checked before any mount is chosen: an ambiguous request is refused as such.
  const segments = parsePath(target, 0, q);
  if (q < target.length) checkQuery(target, q + 1);
  const query = q < target.length ? target.slice(q + 1) : '';
  if (ctx.kind === 'intercepted') {
    let host = ctx.host.toLowerCase();
    if (host.charCodeAt(0) === 91) host = host.slice(1, -1);
    checkHostHeader(headers, host, ctx.port, 443);
    return { method, scheme: 'https', host, port: ctx.port, path: target.slice(0, q), segments, query, kind: 'intercepted' };
  }
  for (const m of ctx.mounts) {
    if (q < m.length || !target.startsWith(m) || (q > m.length && target.charCodeAt(m.length) !== 47)) continue;
    // "/billing" and "/billing/" both address the upstream's root "/".
    const path = q - m.length <= 1 ? '/' : target.slice(m.length, q);
    let mountSegments = 0;
    for (let i = 0; i < m.length; i++) if (m.charCodeAt(i) === 47) mountSegments++;
    const origin = ctx.upstreamOf(m);
    return {
      method,
      scheme: origin.scheme,
      host: origin.host,
      port: origin.port,
      path,
      segments: path === '/' ? [] : segments.slice(mountSegments),
      query,
      kind: 'reverse',
      mount: m,
    };
  }
  return undefined;
}

function isDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/**
 * Refuse conflicting framing: Content-Length with Transfer-Encoding, differing Content-Length
 * values, any Transfer-Encoding but exactly "chunked". Several Host headers are refused here too:
 * node keeps only the first, an upstream might keep another. rawHeaders is req.rawHeaders.
 */
export function checkFraming(rawHeaders: string[]): void {
  let contentLength: string | undefined;
  let transferEncodings = 0;
  let hosts = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    const len = name.length;
    if (len === 14 && name.toLowerCase() === 'content-length') {
      const value = rawHeaders[i + 1];
      for (const part of value.includes(',') ? value.split(',') : [value]) {
        const v = part.trim();
        if (!isDigits(v)) throw ambiguous('invalid Content-Length');
        if (contentLength === undefined) contentLength = v;
        else if (contentLength !== v) throw ambiguous('conflicting Content-Length values');
      }
    } else if (len === 17 && name.toLowerCase() === 'transfer-encoding') {
      transferEncodings++;
      if (rawHeaders[i + 1].trim().toLowerCase() !== 'chunked') throw ambiguous('Transfer-Encoding other than "chunked"');
    } else if (len === 4 && name.toLowerCase() === 'host') {
      hosts++;
    }
  }
  if (transferEncodings > 1) throw ambiguous('several Transfer-Encoding headers');
  if (transferEncodings > 0 && contentLength !== undefined) throw ambiguous('both Content-Length and Transfer-Encoding');
  if (hosts > 1) throw ambiguous('several Host headers');
}
