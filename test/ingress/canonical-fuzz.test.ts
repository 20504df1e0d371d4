/**
 * Canonicalization under generated hostile targets (seeded, so every run checks the same cases):
 * a target is either refused with a SidecarError or accepted in a form that every reader sees
 * the same way. What is accepted is forwarded byte for byte, so the properties are checked on it:
 * - the path forwarded is exactly the path received, and canonicalizing it again changes nothing;
 * - the WHATWG URL parser (what undici and browsers use) reads the same path, so no dot segment,
 *   however encoded, can move it;
 * - the decoded segments hold no "/", "\", NUL or control character and no dot segment;
 * - the segments, re-joined, are the path decoded.
 */
import t, { type Test } from 'tap';
import { SidecarError } from '../../src/errors.js';
import { canonicalizeForward, canonicalizeOrigin } from '../../src/ingress/canonical.js';

/** Small deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Pieces that parsers disagree on, mixed with ordinary ones. */
const PIECES = [
  '/', '/', '/', 'a', 'b', 'customers', '12345', '.', '..', '%2e', '%2E', '%2e%2e', '.%2e', '%2f', '%2F', '%5c', '%5C',
  '%00', '%0a', '%0d', '%09', '%7f', '%25', '%', '%g', '%c3%a9', '%C3', '%ff', '%e2%80%ae', ';', ';x', '..;', '.;', '\\', '#',
  '?', '?q=1', '&', '=', ':', '@', '!', '$', "'", '(', ')', '*', '+', ',', '~', '-', '_', ' ', '"', '<', '>', '`', '{', '}', '|',
  '^', '[', ']', '\t', '\u0000', '\u007f', 'é', '\u2028', '\ud800', '//', '/./', '/../', 'A', 'Z', '0', '9',
];

function target(next: () => number): string {
  let s = next() < 0.9 ? '/' : '';
  const n = 1 + Math.floor(next() * 8);
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(next() * PIECES.length)];
  return s;
}

const DOT = /^\.\.?(;.*)?$/;

function checkAccepted(t: Test, raw: string, path: string, query: string, segments: string[]): boolean {
  const pathEnd = raw.indexOf('?');
  const sentPath = pathEnd < 0 ? raw : raw.slice(0, pathEnd);
  const sentQuery = pathEnd < 0 ? '' : raw.slice(pathEnd + 1);
  const problems: string[] = [];
  if (path !== (sentPath === '' ? '/' : sentPath)) problems.push(`path ${JSON.stringify(path)} is not the path received`);
  if (query !== sentQuery) problems.push('query changed');
  if (new URL(`http://h${path}`).pathname !== path) problems.push(`WHATWG URL reads ${new URL(`http://h${path}`).pathname}`);
  for (const s of segments) {
    if (/[/\\\u0000-\u001f\u007f]/.test(s)) problems.push(`segment ${JSON.stringify(s)} holds a separator or control`);
    if (DOT.test(s)) problems.push(`dot segment ${JSON.stringify(s)}`);
  }
  const decoded = path === '/' ? [] : path.slice(1).split('/').map((p) => decodeURIComponent(p));
  if (JSON.stringify(decoded) !== JSON.stringify(segments)) problems.push('segments are not the decoded path');
  if (problems.length > 0) {
    t.fail(`accepted ${JSON.stringify(raw)}: ${problems.join('; ')}`);
    return false;
  }
  return true;
}

function refusedOrThrow(fn: () => unknown): 'refused' | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof SidecarError) return 'refused';
    throw e;
  }
}

t.test('forward-proxy targets: refused, or forwarded exactly as every reader sees them', async (t) => {
  const next = rng(20261124);
  let accepted = 0;
  let refused = 0;
  let failures = 0;
  for (let i = 0; i < 20000 && failures < 5; i++) {
    const raw = target(next);
    const abs = `http://api.example.com${raw}`;
    let canon: ReturnType<typeof canonicalizeForward> | undefined;
    try {
      canon = canonicalizeForward('GET', abs, { host: 'api.example.com' });
    } catch (e) {
      if (!(e instanceof SidecarError)) {
        t.fail(`${JSON.stringify(abs)} threw ${(e as Error).name}: ${(e as Error).message}`);
        failures++;
      }
      refused++;
      continue;
    }
    accepted++;
    if (!checkAccepted(t, raw, canon.path, canon.query, canon.segments)) {
      failures++;
      continue;
    }
    const again = canonicalizeForward('GET', `http://api.example.com${canon.path}${canon.query ? `?${canon.query}` : ''}`, { host: 'api.example.com' });
    if (again.path !== canon.path || JSON.stringify(again.segments) !== JSON.stringify(canon.segments)) {
      t.fail(`canonicalizing ${JSON.stringify(raw)} twice differs`);
      failures++;
    }
  }
  t.equal(failures, 0, 'no case broke a property');
  // Both outcomes must be well represented, or the generator tests nothing.
  t.ok(accepted > 2000, `accepted ${accepted}`);
  t.ok(refused > 2000, `refused ${refused}`);
});

t.test('origin-form targets (reverse mounts and intercepted tunnels) hold the same properties', async (t) => {
  const next = rng(7);
  let failures = 0;
  let accepted = 0;
  for (let i = 0; i < 20000 && failures < 5; i++) {
    const raw = target(next);
    let canon: ReturnType<typeof canonicalizeOrigin>;
    try {
      canon = canonicalizeOrigin('GET', raw, { host: 'api.example.com' }, { kind: 'intercepted', host: 'api.example.com', port: 443 });
    } catch (e) {
      if (!(e instanceof SidecarError)) {
        t.fail(`${JSON.stringify(raw)} threw ${(e as Error).name}: ${(e as Error).message}`);
        failures++;
      }
      continue;
    }
    if (!canon) continue;
    accepted++;
    if (!checkAccepted(t, raw, canon.path, canon.query, canon.segments)) failures++;
  }
  t.equal(failures, 0, 'no case broke a property');
  t.ok(accepted > 2000, `accepted ${accepted}`);
  t.equal(refusedOrThrow(() => canonicalizeOrigin('GET', '/a/%2e%2E/b', {}, { kind: 'intercepted', host: 'h', port: 443 })), 'refused');
});
