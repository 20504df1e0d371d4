import t from 'tap';
import type { AgentIdentity } from '../../src/auth/types.js';
import { explainRequest, formatExplanation } from '../../src/policy/explain.js';
import { compileFrom, request, routesFile } from './fixtures/policy.js';

const policy = compileFrom({
  'p.yaml': routesFile(
    `  - id: billing-read\n    host: api.example.com\n    methods: [GET]\n    path: /customers/{customer}/billing\n    scopes: ["read:billing:customer-{customer}"]\n    connector: k\n` +
      `  - id: refund\n    host: api.example.com\n    methods: [POST]\n    path: /customers/{customer}/refunds\n    scopes: ["write:billing:customer-{customer}"]\n    maxDelegationDepth: 1\n` +
      `  - id: alt\n    host: alt.example.com\n    port: 8080\n    scheme: http\n    path: /x\n    scopes: ["read:x:y"]\n` +
      `  - id: by-id\n    host: api.example.com\n    path: /ids/{id}\n    scopes: ["read:ids:{id}"]\n` +
      `  - id: rev\n    mount: /billing\n    upstream: http://127.0.0.1:9000\n    path: /items\n    scopes: ["read:items:all"]\n`,
    `  - name: k\n    type: static\n    secret: { env: K }\n`,
  ),
});

function identity(scopes: string[], delegationDepth = 0): AgentIdentity {
  return { sub: 'spiffe://x/agent/a', jti: 'j', iss: '', aud: [], exp: 2e9, nbf: 0, iat: 0, scopes, delegationDepth };
}

const explain = (method: string, url: string, id?: AgentIdentity) => explainRequest(policy, request(policy, method, url), id);

t.test('a matching route, without a token', async (t) => {
  const e = explain('GET', 'http://api.example.com/customers/12345/billing');
  t.match(e, {
    matched: true,
    routeId: 'billing-read',
    source: 'p.yaml:7:5',
    requiredScopes: ['read:billing:customer-12345'],
    connector: 'k',
  });
  t.equal(e.decision, undefined);
  t.match(e.reasons[0], /matches route "billing-read" \(\/customers\/\{customer\}\/billing\) with customer="12345"/);
  const text = formatExplanation(e);
  t.match(text, /^route: +billing-read \(p\.yaml:7:5\)$/m);
  t.match(text, /^scopes: +read:billing:customer-12345$/m);
  t.match(text, /^connector: +k$/m);
  t.notMatch(text, /decision/);
});

t.test('with an identity: allow, scope_violation, delegation_too_deep', async (t) => {
  const url = 'http://api.example.com/customers/12345/refunds';
  t.match(explain('POST', url, identity(['write:billing:customer-12345'])), { decision: 'allow', errorCode: undefined });
  t.match(explain('POST', url, identity(['write:billing:*'])), { decision: 'allow' });
  const denied = explain('POST', url, identity(['write:billing:customer-99', 'read:billing:customer-12345']));
  t.match(denied, { decision: 'deny', errorCode: 'scope_violation' });
  t.match(denied.reasons.join('\n'), /do not cover write:billing:customer-12345/);
  const deep = explain('POST', url, identity(['write:billing:*'], 2));
  t.match(deep, { decision: 'deny', errorCode: 'delegation_too_deep' });
  t.match(deep.reasons.join('\n'), /delegation depth 2 exceeds the route's maximum 1/);
  t.match(formatExplanation(deep), /^decision: +deny \(delegation_too_deep\)$/m);
});

t.test('a value that cannot be authorized is denied even for a wildcard grant', async (t) => {
  const e = explain('GET', 'http://api.example.com/ids/%2A', identity(['read:ids:*']));
  t.match(e, { matched: true, decision: 'deny', errorCode: 'scope_violation', requiredScopes: ['read:ids:*'] });
  t.match(e.reasons.join('\n'), /no token can be allowed this request: .*wildcard/);
  t.match(explain('GET', 'http://api.example.com/ids/%2A'), { decision: 'deny', errorCode: 'scope_violation' });
});

t.test('no route: says why', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['GET', 'http://unknown.example.org/x', /no route for host unknown\.example\.org/],
    ['GET', 'http://alt.example.com/x', /routes exist for alt\.example\.com but none for http port 80; they use http port 8080/],
    ['GET', 'http://api.example.com/customers', /no route's path template matches \/customers\n {2}billing-read: \/customers\/\{customer\}\/billing \(p\.yaml:7:5\)/],
    ['DELETE', 'http://api.example.com/customers/1/billing', /method DELETE is not allowed:\n {2}billing-read: \/customers\/\{customer\}\/billing allows GET \(p\.yaml:7:5\)/],
    ['GET', '/billing/other', /no route's path template matches \/other/],
  ];
  for (const [method, url, re] of cases) {
    const e = explain(method, url, identity(['read:billing:*']));
    t.match(e, { matched: false, decision: 'deny', errorCode: 'no_route', requiredScopes: [] }, url);
    t.match(e.reasons.join('\n'), re, url);
    t.match(formatExplanation(e), /^route: +\(none\)$/m, url);
  }
});
