import t from 'tap';
import { SidecarError } from '../../src/errors.js';
import { canonicalizeForward, canonicalizeOrigin, checkFraming } from '../../src/ingress/canonical.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof SidecarError) return e.code;
    throw e;
  }
  return 'accepted';
}

const fwd = (target: string, host?: string, method = 'GET') => () =>
  canonicalizeForward(method, target, host === undefined ? {} : { host });

t.test('forward: accepted requests are canonical', async (t) => {
  const r = canonicalizeForward('GET', 'http://API.Example.com/customers/12345/billing?x=1&y=%2F', { host: 'api.example.COM' });
  t.same(r, {
    method: 'GET',
    scheme: 'http',
    host: 'api.example.com',
    port: 80,
    path: '/customers/12345/billing',
    segments: ['customers', '12345', 'billing'],
    query: 'x=1&y=%2F',
    kind: 'forward',
  });
  const cases: Array<[string, string | undefined, Partial<ReturnType<typeof canonicalizeForward>>]> = [
    ['http://api.example.com', 'api.example.com', { path: '/', segments: [], port: 80 }],
    ['http://api.example.com?q', undefined, { path: '/', segments: [], query: 'q' }],
    ['http://api.example.com:8080/a/', 'api.example.com:8080', { port: 8080, path: '/a/', segments: ['a', ''] }],
    ['http://api.example.com:80/a', 'api.example.com', { port: 80 }],
    ['http://api.example.com/a', 'api.example.com:80', { port: 80 }],
    ['http://[::1]:9000/x', '[::1]:9000', { host: '::1', port: 9000 }],
    ['http://127.0.0.1/x', '127.0.0.1', { host: '127.0.0.1' }],
    ['http://h/a%20b/c%3Ad', 'h', { path: '/a%20b/c%3Ad', segments: ['a b', 'c:d'] }],
    ['http://h/%2A', 'h', { segments: ['*'] }],
    ['http://h/caf%C3%A9', 'h', { segments: ['café'] }],
    ['http://h/a;b=c/@x:y', 'h', { segments: ['a;b=c', '@x:y'] }],
    ['http://h/.well-known/x', 'h', { segments: ['.well-known', 'x'] }],
    ['http://h/...', 'h', { segments: ['...'] }],
    ['http://h/%25', 'h', { segments: ['%'] }],
    ['http://h/50%25off', 'h', { segments: ['50%off'] }],
    ['http://h/%2541', 'h', { segments: ['%41'] }],
    ['http://h/a%252e', 'h', { segments: ['a%2e'] }],
    ['http://h/a?b=c?d/../e', 'h', { path: '/a', query: 'b=c?d/../e' }],
    ['HTTP://h/a', 'h', { host: 'h' }],
  ];
  for (const [target, host, want] of cases) {
    const got = canonicalizeForward('GET', target, host === undefined ? {} : { host });
    t.match(got, want, target);
  }
});

t.test('forward: refusals', async (t) => {
  const cases: Array<[string, string, string | undefined, string]> = [
    ['dot segment', 'http://h/a/../b', 'h', 'ambiguous_request'],
    ['single dot segment', 'http://h/a/./b', 'h', 'ambiguous_request'],
    ['trailing dot-dot', 'http://h/a/..', 'h', 'ambiguous_request'],
    ['encoded dot-dot', 'http://h/a/%2e%2e/b', 'h', 'ambiguous_request'],
    ['mixed encoded dot-dot', 'http://h/a/.%2E/b', 'h', 'ambiguous_request'],
    ['encoded single dot', 'http://h/%2e/b', 'h', 'ambiguous_request'],
    ['dot-dot with path parameter', 'http://h/public/..;/admin', 'h', 'ambiguous_request'],
    ['encoded slash', 'http://h/a%2Fb', 'h', 'ambiguous_request'],
    ['dot-dot encoded twice', 'http://h/files/%252e%252e/secret', 'h', 'ambiguous_request'],
    ['single dot encoded twice', 'http://h/files/%252E/x', 'h', 'ambiguous_request'],
    ['dot-dot with its percent signs encoded digit by digit', 'http://h/files/%25%32%65%25%32%65/secret', 'h', 'ambiguous_request'],
    ['slash encoded twice', 'http://h/a%252Fb', 'h', 'ambiguous_request'],
    ['slash encoded twice beside an undecodable escape', 'http://h/a%252f%25zz', 'h', 'ambiguous_request'],
    ['backslash encoded twice', 'http://h/a%255cb', 'h', 'ambiguous_request'],
    ['NUL encoded twice', 'http://h/a%2500', 'h', 'ambiguous_request'],
    ['encoded slash lower-case', 'http://h/a%2fb', 'h', 'ambiguous_request'],
    ['encoded backslash', 'http://h/a%5Cb', 'h', 'ambiguous_request'],
    ['encoded NUL', 'http://h/a%00', 'h', 'ambiguous_request'],
    ['encoded newline', 'http://h/a%0A', 'h', 'ambiguous_request'],
    ['literal backslash', 'http://h/a\\b', 'h', 'ambiguous_request'],
    ['control character', 'http://h/a\x01b', 'h', 'ambiguous_request'],
    ['DEL', 'http://h/a\x7f', 'h', 'ambiguous_request'],
    ['space', 'http://h/a b', 'h', 'ambiguous_request'],
    ['empty segment', 'http://h/a//b', 'h', 'ambiguous_request'],
    ['leading empty segment', 'http://h//a', 'h', 'ambiguous_request'],
    ['bad percent-encoding', 'http://h/a%zz', 'h', 'ambiguous_request'],
    ['truncated percent-encoding', 'http://h/a%4', 'h', 'ambiguous_request'],
    ['percent at end', 'http://h/a%', 'h', 'ambiguous_request'],
    ['invalid UTF-8', 'http://h/%C3%28', 'h', 'ambiguous_request'],
    ['fragment', 'http://h/a#frag', 'h', 'ambiguous_request'],
    ['fragment after host', 'http://h#frag', 'h', 'ambiguous_request'],
    ['fragment in query', 'http://h/a?x#y', 'h', 'ambiguous_request'],
    ['host header mismatch', 'http://a.example.com/x', 'b.example.com', 'ambiguous_request'],
    ['host header port mismatch', 'http://a.example.com:8080/x', 'a.example.com', 'ambiguous_request'],
    ['host header garbage', 'http://a.example.com/x', 'a.example.com:xx', 'ambiguous_request'],
    ['userinfo', 'http://user:pw@h/x', 'h', 'ambiguous_request'],
    ['non-ASCII path', 'http://h/café', 'h', 'ambiguous_request'],
    ['non-ASCII query', 'http://h/a?q=é', 'h', 'ambiguous_request'],
    ['space in query', 'http://h/a?q=a b', 'h', 'ambiguous_request'],
    ['trailing dot host', 'http://api.example.com./x', undefined, 'ambiguous_request'],
    ['empty label', 'http://api..example.com/x', undefined, 'ambiguous_request'],
    ['percent-encoded host', 'http://%61pi.example.com/x', undefined, 'ambiguous_request'],
    ['unencoded brace', 'http://h/a{b}', 'h', 'ambiguous_request'],
    ['https scheme', 'https://h/x', 'h', 'bad_request'],
    ['origin form', '/x', 'h', 'bad_request'],
    ['other scheme', 'ftp://h/x', 'h', 'bad_request'],
    ['empty host', 'http:///x', undefined, 'bad_request'],
    ['bad port', 'http://h:99999/x', undefined, 'bad_request'],
    ['empty port', 'http://h:/x', undefined, 'bad_request'],
    ['non-numeric port', 'http://h:8o/x', undefined, 'bad_request'],
    ['invalid host char', 'http://h!x/x', undefined, 'bad_request'],
    ['bad IPv6', 'http://[zz::1]/x', undefined, 'bad_request'],
  ];
  for (const [name, target, host, want] of cases) t.equal(code(fwd(target, host)), want, name);
  t.equal(code(fwd('http://h/x', 'h', 'GE T')), 'bad_request', 'method with space');
  t.equal(code(fwd('http://h/x', 'h', '')), 'bad_request', 'empty method');
  t.equal(code(fwd('http://h/x', 'h', 'PROPFIND')), 'accepted', 'any token method');
});

t.test('forward: details are safe and name the reason', async (t) => {
  try {
    canonicalizeForward('GET', 'http://user:secret-pw@h/x', {});
    t.fail('accepted');
  } catch (e) {
    t.notMatch((e as SidecarError).detail, /secret-pw/);
    t.match((e as SidecarError).detail, /user information/);
  }
});

const reverseCtx = {
  kind: 'reverse' as const,
  mounts: ['/billing/v2', '/billing', '/files'],
  upstreamOf: (m: string) =>
    m === '/files'
      ? { scheme: 'https' as const, host: 'files.internal', port: 8443 }
      : { scheme: 'http' as const, host: '127.0.0.1', port: m === '/billing' ? 9000 : 9002 },
};

t.test('reverse: mounts, longest first, prefix removed', async (t) => {
  const cases: Array<[string, Record<string, unknown> | undefined]> = [
    ['/billing/customers/1?x=1', { mount: '/billing', path: '/customers/1', segments: ['customers', '1'], query: 'x=1', port: 9000 }],
    ['/billing', { mount: '/billing', path: '/', segments: [] }],
    ['/billing/', { mount: '/billing', path: '/', segments: [] }],
    ['/billing?x', { mount: '/billing', path: '/', query: 'x' }],
    ['/billing/v2/a', { mount: '/billing/v2', path: '/a', segments: ['a'], port: 9002 }],
    ['/billing/v20/a', { mount: '/billing', path: '/v20/a', segments: ['v20', 'a'] }],
    ['/billing/a/', { path: '/a/', segments: ['a', ''] }],
    ['/files/a%20b', { mount: '/files', scheme: 'https', host: 'files.internal', port: 8443, path: '/a%20b', segments: ['a b'] }],
    ['/billingx/a', undefined],
    ['/other', undefined],
    ['/', undefined],
  ];
  for (const [target, want] of cases) {
    const got = canonicalizeOrigin('GET', target, { host: 'localhost:15101' }, reverseCtx);
    if (want === undefined) t.equal(got, undefined, target);
    else t.match(got, { kind: 'reverse', ...want }, target);
  }
});

t.test('reverse: refusals apply to the whole path, mount or not', async (t) => {
  const cases: Array<[string, string]> = [
    ['/billing/../admin', 'ambiguous_request'],
    ['/billing/%2e%2e/admin', 'ambiguous_request'],
    ['/nomount/../billing/x', 'ambiguous_request'],
    ['/billing/a%2Fb', 'ambiguous_request'],
    ['/billing//a', 'ambiguous_request'],
    ['/billing/a#x', 'ambiguous_request'],
    ['http://h/billing/a', 'bad_request'],
    ['*', 'bad_request'],
  ];
  for (const [target, want] of cases) t.equal(code(() => canonicalizeOrigin('GET', target, {}, reverseCtx)), want, target);
});

t.test('intercepted: host from the tunnel, Host header must agree', async (t) => {
  const ctx = { kind: 'intercepted' as const, host: 'API.example.com', port: 443 };
  t.same(canonicalizeOrigin('POST', '/customers/1/refunds?a=b', { host: 'api.example.com' }, ctx), {
    method: 'POST',
    scheme: 'https',
    host: 'api.example.com',
    port: 443,
    path: '/customers/1/refunds',
    segments: ['customers', '1', 'refunds'],
    query: 'a=b',
    kind: 'intercepted',
  });
  t.equal(code(() => canonicalizeOrigin('GET', '/x', { host: 'api.example.com:443' }, ctx)), 'accepted');
  t.equal(code(() => canonicalizeOrigin('GET', '/x', {}, ctx)), 'accepted', 'no Host header (HTTP/1.0)');
  t.equal(code(() => canonicalizeOrigin('GET', '/x', { host: 'evil.example.com' }, ctx)), 'ambiguous_request');
  t.equal(code(() => canonicalizeOrigin('GET', '/x', { host: 'api.example.com:8443' }, ctx)), 'ambiguous_request');
  const other = { kind: 'intercepted' as const, host: '[::1]', port: 8443 };
  t.match(canonicalizeOrigin('GET', '/x', { host: '[::1]:8443' }, other), { host: '::1', port: 8443 });
  t.equal(code(() => canonicalizeOrigin('GET', '/x', { host: '[::1]' }, other)), 'ambiguous_request');
});

t.test('checkFraming', async (t) => {
  const cases: Array<[string, string[], string]> = [
    ['no body', ['Host', 'h'], 'accepted'],
    ['content-length', ['Content-Length', '5'], 'accepted'],
    ['identical duplicate content-length', ['Content-Length', '5', 'content-length', '5'], 'accepted'],
    ['identical list content-length', ['Content-Length', '5, 5'], 'accepted'],
    ['chunked', ['Transfer-Encoding', 'chunked'], 'accepted'],
    ['chunked any case', ['transfer-encoding', ' Chunked '], 'accepted'],
    ['CL and TE', ['Content-Length', '5', 'Transfer-Encoding', 'chunked'], 'ambiguous_request'],
    ['TE and CL', ['Transfer-Encoding', 'chunked', 'Content-Length', '0'], 'ambiguous_request'],
    ['differing CL', ['Content-Length', '5', 'Content-Length', '6'], 'ambiguous_request'],
    ['differing CL list', ['Content-Length', '5, 6'], 'ambiguous_request'],
    ['non-numeric CL', ['Content-Length', '5a'], 'ambiguous_request'],
    ['negative CL', ['Content-Length', '-1'], 'ambiguous_request'],
    ['gzip TE', ['Transfer-Encoding', 'gzip, chunked'], 'ambiguous_request'],
    ['identity TE', ['Transfer-Encoding', 'identity'], 'ambiguous_request'],
    ['two TE headers', ['Transfer-Encoding', 'chunked', 'Transfer-Encoding', 'chunked'], 'ambiguous_request'],
    ['two Host headers', ['Host', 'a', 'host', 'b'], 'ambiguous_request'],
  ];
  for (const [name, raw, want] of cases) t.equal(code(() => checkFraming(raw)), want, name);
});
