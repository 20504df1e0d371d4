import t from 'tap';
import { compileFrom, request } from './fixtures/policy.js';

const ROUTES = [
  `  - id: root
    host: api.example.com
    path: /
    scopes: ["read:root:x"]`,
  `  - id: cust-list
    host: api.example.com
    methods: [GET]
    path: /customers
    scopes: ["read:customers:*"]`,
  `  - id: cust-list-slash
    host: api.example.com
    methods: [GET]
    path: /customers/
    scopes: ["read:customers:slash"]`,
  `  - id: cust-one
    host: api.example.com
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:customers:customer-{customer}"]`,
  `  - id: cust-me
    host: api.example.com
    methods: [GET]
    path: /customers/me
    scopes: ["read:customers:me"]`,
  `  - id: cust-billing
    host: api.example.com
    methods: [GET]
    path: /customers/{customer}/billing
    scopes: ["read:billing:customer-{customer}"]`,
  `  - id: cust-billing-any
    host: api.example.com
    methods: ["*"]
    path: /customers/{customer}/billing
    scopes: ["write:billing:customer-{customer}"]`,
  `  - id: files-rest
    host: api.example.com
    methods: [GET]
    path: /files/{path*}
    scopes: ["read:files:{path}"]`,
  `  - id: files-readme
    host: api.example.com
    methods: [GET]
    path: /files/{dir}/readme
    scopes: ["read:files:{dir}"]`,
  `  - id: port-8080
    host: api.example.com
    port: 8080
    scheme: http
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:customers:alt-{customer}"]`,
  `  - id: tls-443
    host: tls.example.org
    port: 443
    methods: [GET]
    path: /x
    scopes: ["read:x:y"]`,
  `  - id: https-only
    host: secure.example.org
    scheme: https
    methods: [GET]
    path: /x
    scopes: ["read:x:y"]`,
  `  - id: wild
    host: "*.example.com"
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:customers:wild-{customer}"]`,
  `  - id: wild-status
    host: "*.example.com"
    methods: [GET]
    path: /status
    scopes: ["read:status:x"]`,
  `  - id: wild-eu
    host: "*.EU.example.com"
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:customers:eu-{customer}"]`,
  `  - id: loopback
    host: 127.0.0.1
    port: 9000
    scheme: http
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:customers:loop-{customer}"]`,
  `  - id: rev-billing
    mount: /billing
    upstream: http://127.0.0.1:9000
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:billing:customer-{customer}"]`,
  `  - id: rev-billing-root
    mount: /billing
    upstream: http://127.0.0.1:9000
    methods: [GET]
    path: /
    scopes: ["read:billing:root"]`,
  `  - id: rev-billing-v2
    mount: /billing/v2
    upstream: https://billing.internal
    methods: [GET]
    path: /customers/{customer}
    scopes: ["read:billing:v2-{customer}"]`,
];

const file = (routes: string[]) => `version: v1\nroutes:\n${routes.join('\n')}\n`;

// [method, url, expected route id or undefined, expected params]
const TABLE: Array<[string, string, string | undefined, Record<string, string>?]> = [
  ['GET', 'http://api.example.com/', 'root'],
  ['HEAD', 'http://api.example.com/', 'root'],
  ['POST', 'http://api.example.com/', undefined],
  ['GET', 'http://api.example.com/customers', 'cust-list'],
  ['GET', 'http://api.example.com/customers/', 'cust-list-slash'],
  ['GET', 'http://api.example.com/customers/me', 'cust-me'],
  ['GET', 'http://api.example.com/customers/%6De', 'cust-me'],
  ['GET', 'http://api.example.com/customers/42', 'cust-one', { customer: '42' }],
  ['GET', 'http://api.example.com/customers/a%20b', 'cust-one', { customer: 'a b' }],
  ['HEAD', 'http://api.example.com/customers/42', undefined],
  ['GET', 'http://api.example.com/customers/42/', undefined],
  ['GET', 'http://api.example.com/customers/42/billing', 'cust-billing', { customer: '42' }],
  ['POST', 'http://api.example.com/customers/42/billing', 'cust-billing-any'],
  ['DELETE', 'http://api.example.com/customers/42/billing', 'cust-billing-any'],
  ['TRACE', 'http://api.example.com/customers/42/billing', undefined],
  ['PROPFIND', 'http://api.example.com/customers/42/billing', 'cust-billing-any'],
  ['GET', 'http://api.example.com/files/a', 'files-rest', { path: 'a' }],
  ['GET', 'http://api.example.com/files/a/b/c', 'files-rest', { path: 'a/b/c' }],
  ['GET', 'http://api.example.com/files/a%20b/c/', 'files-rest', { path: 'a b/c/' }],
  ['GET', 'http://api.example.com/files/docs/readme', 'files-readme', { dir: 'docs' }],
  ['GET', 'http://api.example.com/files/docs/readme/x', 'files-rest', { path: 'docs/readme/x' }],
  ['GET', 'http://api.example.com/files/', undefined],
  ['GET', 'http://api.example.com/files', undefined],
  ['GET', 'https://api.example.com/customers/42', 'cust-one'],
  ['GET', 'http://api.example.com:8080/customers/42', 'port-8080'],
  ['GET', 'https://api.example.com:8080/customers/42', undefined],
  ['GET', 'https://tls.example.org/x', 'tls-443'],
  ['GET', 'http://tls.example.org:443/x', undefined],
  ['GET', 'http://tls.example.org/x', undefined],
  ['GET', 'https://secure.example.org/x', 'https-only'],
  ['GET', 'http://secure.example.org/x', undefined],
  ['GET', 'http://api.example.com:443/customers/42', undefined],
  ['GET', 'http://api.example.com:443/customers', undefined],
  ['GET', 'https://api.example.com:80/customers', undefined],
  ['GET', 'http://x.example.com/customers/1', 'wild', { customer: '1' }],
  ['GET', 'http://a.b.example.com/customers/1', 'wild'],
  ['GET', 'http://example.com/customers/1', undefined],
  ['GET', 'http://eu.example.com/customers/1', 'wild'],
  ['GET', 'http://x.eu.example.com/customers/1', 'wild-eu'],
  ['GET', 'http://x.y.eu.example.com/customers/1', 'wild-eu'],
  ['GET', 'http://api.example.com/status', 'wild-status'],
  ['GET', 'http://notexample.com/status', undefined],
  ['GET', 'http://127.0.0.1:9000/customers/7', 'loopback'],
  ['GET', 'http://127.0.0.1/customers/7', undefined],
  ['GET', '/billing/customers/7', 'rev-billing', { customer: '7' }],
  ['GET', '/billing', 'rev-billing-root'],
  ['GET', '/billing/', 'rev-billing-root'],
  ['GET', '/billing/v2/customers/7', 'rev-billing-v2'],
  ['GET', '/billing/v2', undefined],
  ['POST', '/billing/customers/7', undefined],
];

for (const [name, routes] of [
  ['file order', ROUTES],
  ['reversed order', [...ROUTES].reverse()],
] as const) {
  t.test(`route matching table (${name})`, async (t) => {
    const policy = compileFrom({ 'p.yaml': file(routes) });
    for (const [method, url, id, params] of TABLE) {
      const m = policy.matcher.match(request(policy, method, url));
      t.equal(m?.route.id, id, `${method} ${url}`);
      if (params) t.same(m?.params, params, `${method} ${url} params`);
    }
  });
}

t.test('reverse requests carry the upstream of their mount; forward never matches a mount', async (t) => {
  const policy = compileFrom({ 'p.yaml': file(ROUTES) });
  t.same(policy.matcher.mounts(), ['/billing/v2', '/billing']);
  t.same(policy.mountUpstream('/billing/v2'), { scheme: 'https', host: 'billing.internal', port: 443 });
  const r = request(policy, 'GET', '/billing/v2/customers/7');
  t.match(r, { scheme: 'https', host: 'billing.internal', port: 443, path: '/customers/7' });
  const m = policy.matcher.match(r);
  t.same(m?.route.upstream, { scheme: 'https', host: 'billing.internal', port: 443 });
  t.same(m?.requiredScopes, ['read:billing:v2-7']);
  // Same host/port/path as the reverse route's upstream, but forward: only host routes apply.
  t.equal(policy.matcher.match(request(policy, 'GET', 'http://127.0.0.1:9000/customers/7'))?.route.id, 'loopback');
});

t.test('governsHost (CONNECT decisions)', async (t) => {
  const policy = compileFrom({ 'p.yaml': file(ROUTES) });
  const cases: Array<[string, number, boolean]> = [
    ['api.example.com', 443, true],
    ['API.EXAMPLE.COM', 443, true],
    ['api.example.com', 8080, true],
    ['api.example.com', 8443, false],
    ['api.example.com', 80, true],
    ['tls.example.org', 443, true],
    ['tls.example.org', 80, false],
    ['secure.example.org', 80, false],
    ['x.example.com', 443, true],
    ['x.eu.example.com', 443, true],
    ['example.com', 443, false],
    ['127.0.0.1', 9000, true],
    ['127.0.0.1', 443, false],
    ['billing.internal', 443, false],
    ['other.org', 443, false],
    ['[::1]', 443, false],
  ];
  for (const [host, port, want] of cases) t.equal(policy.matcher.governsHost(host, port), want, `${host}:${port}`);
});

t.test('required scopes are filled from decoded parameters', async (t) => {
  const policy = compileFrom({ 'p.yaml': file(ROUTES) });
  const m = policy.matcher.match(request(policy, 'GET', 'http://api.example.com/files/a%3Ab/c'));
  t.same(m?.requiredScopes, ['read:files:a:b/c']);
  t.equal(m?.scopeProblem, undefined);
  t.equal(m?.route.pathTemplate, '/files/{path*}');
  const line = file(ROUTES).split('\n').indexOf('  - id: files-rest') + 1;
  t.same(m?.route.source, { file: 'p.yaml', line, col: 5 });
});

t.test('a parameter named like an Object.prototype member is a value like any other', async (t) => {
  const policy = compileFrom({
    'p.yaml': `version: v1
routes:
  - id: proto
    host: h.example.com
    path: /files/{__proto__}
    scopes: ["read:files:{__proto__}"]
  - id: proto-resource
    host: h.example.com
    path: /r/{constructor}/{__proto__}
    scopes: ["read:{__proto__}:{constructor}"]
`,
  });
  t.same(policy.matcher.match(request(policy, 'GET', 'http://h.example.com/files/payroll.xlsx'))?.requiredScopes, ['read:files:payroll.xlsx']);
  t.same(policy.matcher.match(request(policy, 'GET', 'http://h.example.com/r/x/billing'))?.requiredScopes, ['read:billing:x']);
});

t.test('an IPv6 route host matches the address however the request spells it', async (t) => {
  const policy = compileFrom({
    'p.yaml': `version: v1
routes:
  - id: v6
    host: "0:0:0:0:0:0:0:1"
    port: 9000
    scheme: http
    path: /admin
    scopes: ["admin:svc:root"]
`,
  });
  for (const url of ['http://[::1]:9000/admin', 'http://[0:0:0:0:0:0:0:1]:9000/admin', 'http://[0::1]:9000/admin']) {
    t.equal(policy.matcher.match(request(policy, 'GET', url))?.route.id, 'v6', url);
  }
});
