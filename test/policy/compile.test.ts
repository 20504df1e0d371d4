import t from 'tap';
import { compileFrom, problemsOf, routesFile } from './fixtures/policy.js';

/** The connector's default format, a literal placeholder (not a JS template). */
const SECRET_FORMAT = ['$', '{secret}'].join('');

/** Two routes in one file; `a` starts at line 3, `b` right after `a`'s lines. */
function pair(a: string, b: string): string {
  return routesFile(`  - id: a\n${a}  - id: b\n${b}`);
}
const lineOfB = (a: string) => 3 + a.split('\n').length - 1 + 1;

const H = (extra = '', path = '/a/{x}', scope = 'read:s:{x}') => `    host: h.example.com\n${extra}    path: ${path}\n    scopes: ["${scope}"]\n`;

t.test('overlapping routes of equal specificity are refused, naming both with positions', async (t) => {
  const cases: Array<[string, string, string, boolean]> = [
    ['same shape, other param name', H(), H('', '/a/{y}', 'read:s:{y}'), true],
    ['same literal path', H('', '/a/b', 'r:s:x'), H('', '/a/b', 'r:s:y'), true],
    ['rest vs rest', H('', '/a/{p*}', 'r:s:{p}'), H('', '/a/{q*}', 'r:s:{q}'), true],
    ['methods intersect', H('    methods: [GET, POST]\n'), H('    methods: [POST]\n'), true],
    ['methods disjoint', H('    methods: [GET]\n'), H('    methods: [POST]\n'), false],
    ['both any-method', H('    methods: ["*"]\n'), H('    methods: ["*"]\n'), true],
    ['explicit vs any-method', H('    methods: [GET]\n'), H('    methods: ["*"]\n'), false],
    ['default ports vs 443', H(), H('    port: 443\n'), true],
    ['default ports vs 80', H(), H('    port: 80\n'), true],
    ['default ports vs 8080', H(), H('    port: 8080\n    scheme: http\n'), false],
    ['same explicit port', H('    port: 8080\n    scheme: http\n'), H('    port: 8080\n    scheme: http\n'), true],
    ['same port, other scheme', H('    port: 8080\n    scheme: http\n'), H('    port: 8080\n    scheme: https\n'), false],
    ['default ports vs https only', H(), H('    scheme: https\n'), true],
    ['443 vs http only', H('    port: 443\n'), H('    scheme: http\n'), false],
    ['literal vs param', H('', '/a/b', 'r:s:x'), H(), false],
    ['different literal', H('', '/a/b', 'r:s:x'), H('', '/a/c', 'r:s:x'), false],
    ['param vs rest', H(), H('', '/a/{p*}', 'r:s:{p}'), false],
    ['different lengths', H(), H('', '/a/{x}/{y}', 'r:s:{x}'), false],
    ['trailing slash is distinct', H('', '/a', 'r:s:x'), H('', '/a/', 'r:s:x'), false],
    ['literals compare decoded', H('', '/a%20b', 'r:s:x'), H('', '/a b', 'r:s:x'), true],
    [
      'wildcard vs wildcard, same suffix',
      '    host: "*.example.com"\n    path: /x\n    scopes: ["r:s:x"]\n',
      '    host: "*.EXAMPLE.com"\n    path: /x\n    scopes: ["r:s:x"]\n',
      true,
    ],
    [
      'one IPv6 address spelled two ways',
      '    host: "::1"\n    port: 9000\n    scheme: http\n    path: /x\n    scopes: ["r:s:x"]\n',
      '    host: "[0:0:0:0:0:0:0:1]"\n    port: 9000\n    scheme: http\n    path: /x\n    scopes: ["r:s:x"]\n',
      true,
    ],
    [
      'wildcard vs exact',
      '    host: "*.example.com"\n    path: /x\n    scopes: ["r:s:x"]\n',
      '    host: a.example.com\n    path: /x\n    scopes: ["r:s:x"]\n',
      false,
    ],
    [
      'same mount',
      '    mount: /m\n    upstream: http://127.0.0.1:1\n    path: /x\n    scopes: ["r:s:x"]\n',
      '    mount: /m\n    upstream: http://127.0.0.1:1\n    path: /x\n    scopes: ["r:s:x"]\n',
      true,
    ],
    [
      'different mounts',
      '    mount: /m\n    upstream: http://127.0.0.1:1\n    path: /x\n    scopes: ["r:s:x"]\n',
      '    mount: /n\n    upstream: http://127.0.0.1:1\n    path: /x\n    scopes: ["r:s:x"]\n',
      false,
    ],
  ];
  for (const [name, a, b, overlap] of cases) {
    const problems = problemsOf({ 'p.yaml': pair(a, b) });
    if (!overlap) {
      t.same(problems, [], name);
      continue;
    }
    t.same(
      problems,
      [
        {
          file: 'p.yaml',
          line: lineOfB(a),
          col: 5,
          message: 'route "b" overlaps route "a" (p.yaml:3:5): both match the same requests with equal specificity',
        },
      ],
      name,
    );
  }
});

t.test('overlap across files', async (t) => {
  const r = (id: string) => routesFile(`  - id: ${id}\n${H()}`);
  t.same(problemsOf({ 'one.yaml': r('a'), 'two.yaml': r('b') }), [
    { file: 'two.yaml', line: 3, col: 5, message: 'route "b" overlaps route "a" (one.yaml:3:5): both match the same requests with equal specificity' },
  ]);
});

t.test('route and connector problems, with positions', async (t) => {
  const conn = `  - name: k\n    type: static\n    secret: { env: K }\n`;
  const cases: Array<[string, string, Array<[number, number, RegExp]>]> = [
    ['duplicate id', routesFile(`  - id: a\n${H()}  - id: a\n${H('', '/b', 'r:s:x')}`), [[7, 5, /duplicate route id "a" \(first defined at p.yaml:3:5\)/]]],
    ['unknown connector', routesFile(`  - id: a\n${H()}    connector: nope\n`), [[7, 16, /connector "nope" is not defined/]]],
    ['known connector', routesFile(`  - id: a\n${H()}    connector: k\n`, conn), []],
    ['duplicate connector', `version: v1\nconnectors:\n${conn}${conn}`, [[6, 5, /duplicate connector name "k" \(first defined at p.yaml:3:5\)/]]],
    ['unterminated param', routesFile(`  - id: a\n${H('', '/a/{x', 'r:s:x')}`), [[5, 11, /parameter must be a whole segment/]]],
    ['bad param name', routesFile(`  - id: a\n${H('', '/a/{1x}', 'r:s:x')}`), [[5, 11, /parameter name "1x"/]]],
    ['partial segment param', routesFile(`  - id: a\n${H('', '/a/v{x}', 'r:s:x')}`), [[5, 11, /whole segment/]]],
    ['rest not last', routesFile(`  - id: a\n${H('', '/a/{p*}/b', 'r:s:x')}`), [[5, 11, /must be the last segment/]]],
    ['rest then trailing slash', routesFile(`  - id: a\n${H('', '/a/{p*}/', 'r:s:x')}`), [[5, 11, /must be the last segment/]]],
    ['empty segment', routesFile(`  - id: a\n${H('', '/a//b', 'r:s:x')}`), [[5, 11, /empty segment/]]],
    ['dot segment', routesFile(`  - id: a\n${H('', '/a/../b', 'r:s:x')}`), [[5, 11, /dot segments/]]],
    ['encoded slash literal', routesFile(`  - id: a\n${H('', '/a%2Fb', 'r:s:x')}`), [[5, 11, /encoded "\/"/]]],
    ['duplicate param', routesFile(`  - id: a\n${H('', '/{x}/{x}', 'r:s:{x}')}`), [[5, 11, /\{x\} appears twice/]]],
    ['query in template', routesFile(`  - id: a\n${H('', '/a?b', 'r:s:x')}`), [[5, 11, /no query/]]],
    ['placeholder not in path', routesFile(`  - id: a\n${H('', '/a/{x}', 'read:s:{nope}')}`), [[6, 14, /\{nope\} is not a parameter of the route's path/]]],
    ['scope not three parts', routesFile(`  - id: a\n${H('', '/a', 'read:s')}`), [[6, 14, /not of the form action:resource:identifier/]]],
    ['scope empty part', routesFile(`  - id: a\n${H('', '/a', 'read::x')}`), [[6, 14, /not of the form/]]],
    ['scope unmatched brace', routesFile(`  - id: a\n${H('', '/a/{x}', 'read:s:{x')}`), [[6, 14, /unmatched "\{"/]]],
    ['scope stray close', routesFile(`  - id: a\n${H('', '/a/{x}', 'read:s:x}')}`), [[6, 14, /unmatched "\}"/]]],
    ['scope rest reference', routesFile(`  - id: a\n${H('', '/a/{x*}', 'read:s:{x*}')}`), [[6, 14, /not a parameter reference/]]],
    ['host and mount', routesFile(`  - id: a\n    mount: /m\n    upstream: http://u\n${H('', '/a', 'r:s:x')}`), [[6, 11, /either host .* or mount \+ upstream/]]],
    ['neither host nor mount', routesFile(`  - id: a\n    path: /a\n    scopes: ["r:s:x"]\n`), [[3, 5, /needs host, or mount \+ upstream/]]],
    ['mount without upstream', routesFile(`  - id: a\n    mount: /m\n    path: /a\n    scopes: ["r:s:x"]\n`), [[3, 5, /mount needs an upstream/]]],
    ['port with mount', routesFile(`  - id: a\n    mount: /m\n    upstream: http://u\n    port: 80\n    path: /a\n    scopes: ["r:s:x"]\n`), [[6, 11, /port applies to host routes only/]]],
    ['scheme with mount', routesFile(`  - id: a\n    mount: /m\n    upstream: http://u\n    scheme: http\n    path: /a\n    scopes: ["r:s:x"]\n`), [[6, 13, /scheme applies to host routes only/]]],
    ['port other than 80/443 without scheme', routesFile(`  - id: a\n    host: api.example.com\n    port: 8443\n    path: /a\n    scopes: ["r:s:x"]\n`), [[5, 11, /port 8443 needs a scheme: add scheme: https \(or scheme: http/]]],
    ['caFile with http upstream', routesFile(`  - id: a\n    mount: /m\n    upstream: http://u\n    caFile: ca.pem\n    path: /a\n    scopes: ["r:s:x"]\n`), [[6, 13, /caFile is only used for https/]]],
    ['upstream with path', routesFile(`  - id: a\n    mount: /m\n    upstream: http://u/base\n    path: /a\n    scopes: ["r:s:x"]\n`), [[5, 15, /origin only/]]],
    ['upstream with credentials', routesFile(`  - id: a\n    mount: /m\n    upstream: http://u:p@u\n    path: /a\n    scopes: ["r:s:x"]\n`), [[5, 15, /cannot carry a user name or password .*belongs in a connector/]]],
    ['inner wildcard', routesFile(`  - id: a\n    host: "api.*.com"\n    path: /a\n    scopes: ["r:s:x"]\n`), [[4, 11, /only wildcard allowed/]]],
    ['bare wildcard', routesFile(`  - id: a\n    host: "*"\n    path: /a\n    scopes: ["r:s:x"]\n`), [[4, 11, /only wildcard allowed/]]],
    ['host with port', routesFile(`  - id: a\n    host: api.example.com:8080\n    path: /a\n    scopes: ["r:s:x"]\n`), [[4, 11, /must not include a port/]]],
    ['host trailing dot', routesFile(`  - id: a\n    host: api.example.com.\n    path: /a\n    scopes: ["r:s:x"]\n`), [[4, 11, /must not end with a dot/]]],
    ['host bad chars', routesFile(`  - id: a\n    host: api_!.com\n    path: /a\n    scopes: ["r:s:x"]\n`), [[4, 11, /not a valid host name/]]],
    ['format with a newline and a euro sign', `version: v1\nconnectors:\n  - name: k\n    type: static\n    secret: { env: K }\n    format: "Bearer €\\n${SECRET_FORMAT}"\n`, [[6, 13, /^connectors\[0\]\.format: format holds characters a header cannot carry/]]],
    ['format with a tab', `version: v1\nconnectors:\n  - name: k\n    type: static\n    secret: { env: K }\n    format: "Bearer\t${SECRET_FORMAT}"\n`, [[6, 13, /a header cannot carry/]]],
    ['format in Latin-1', `version: v1\nconnectors:\n  - name: k\n    type: static\n    secret: { env: K }\n    format: "Clé ${SECRET_FORMAT}"\n`, []],
  ];
  for (const [name, text, want] of cases) {
    const problems = problemsOf({ 'p.yaml': text });
    t.equal(problems.length, want.length, `${name}: ${problems.map((p) => p.message).join('; ')}`);
    want.forEach(([line, col, re], i) => {
      t.match(problems[i], { file: 'p.yaml', line, col, message: re }, name);
    });
  }
});

t.test('every problem is reported at once', async (t) => {
  const text = routesFile(
    `  - id: a\n    host: "a.*"\n    path: /a/{x\n    scopes: ["r:s:x"]\n    connector: nope\n  - id: b\n    mount: /m\n    upstream: http://one\n    path: /x\n    scopes: ["r:s:{y}"]\n  - id: c\n    mount: /m\n    upstream: http://two\n    path: /y\n    scopes: ["r:s:x"]\n  - id: a\n    host: h\n    path: /{x}/{x}\n    scopes: ["r:s:x"]\n`,
  );
  const problems = problemsOf({ 'p.yaml': text });
  t.same(
    problems.map((p) => `${p.line}:${p.col}`),
    ['4:11', '5:11', '7:16', '12:14', '13:5', '18:5', '20:11'],
  );
  t.match(problems[5].message, /duplicate route id "a"/);
  t.match(problems[4].message, /mount \/m already maps to http:\/\/one\/? \(route "b" at p.yaml:8:5\)/);
});

t.test('mounts sharing an upstream, hosts lower-cased, paths resolved', async (t) => {
  const text = routesFile(
    `  - id: a\n    mount: /m\n    upstream: https://U.example:8443\n    caFile: certs/ca.pem\n    path: /x\n    scopes: ["r:s:x"]\n` +
      `  - id: b\n    mount: /m\n    upstream: https://u.example:8443/\n    path: /y\n    scopes: ["r:s:x"]\n` +
      `  - id: c\n    host: API.Example.com\n    path: /y\n    scopes: ["r:s:x"]\n    connector: k\n`,
    `  - name: k\n    type: static\n    secret: { file: secrets/k }\n`,
  );
  const p = compileFrom({ '/etc/agentwrit/policies/p.yaml': text });
  t.same(p.routes[0].upstream, { scheme: 'https', host: 'u.example', port: 8443 });
  t.equal(p.routes[0].def.caFile, '/etc/agentwrit/policies/certs/ca.pem');
  t.equal(p.routes[2].def.host, 'api.example.com');
  t.equal(p.routes[2].connector, 'k');
  t.same(p.connectors[0].def, { name: 'k', type: 'static', secret: { file: '/etc/agentwrit/policies/secrets/k' }, header: 'Authorization', format: SECRET_FORMAT });
  t.same(p.connectors[0].source, { file: '/etc/agentwrit/policies/p.yaml', line: 3, col: 5 });
});

t.test('pass-through hosts', async (t) => {
  const pt = (body: string, routes = '') => `version: v1\n${routes ? `routes:\n${routes}` : ''}passThrough:\n${body}`;
  const ok = compileFrom({ 'p.yaml': pt(`  - host: Login.Example.org\n    scopes: ["use:login:*"]\n  - host: "*.cdn.example"\n    port: 8443\n    scopes: ["use:cdn:x"]\n`) });
  t.same(
    ok.passThrough.map(({ host, port, scopes }) => ({ host, port, scopes })),
    [
      { host: 'login.example.org', port: 443, scopes: ['use:login:*'] },
      { host: '*.cdn.example', port: 8443, scopes: ['use:cdn:x'] },
    ],
  );
  const cases: Array<[string, string, RegExp]> = [
    ['template in scope', pt(`  - host: a.example\n    scopes: ["use:{x}:y"]\n`), /cannot have parameters/],
    ['bad scope', pt(`  - host: a.example\n    scopes: ["use"]\n`), /not of the form/],
    ['bad host', pt(`  - host: "a.*"\n    scopes: ["u:s:x"]\n`), /only wildcard/],
    ['listed twice', pt(`  - host: a.example\n    scopes: ["u:s:x"]\n  - host: A.example\n    scopes: ["u:s:y"]\n`), /listed twice/],
    ['also a route', pt(`  - host: a.example.com\n    scopes: ["u:s:x"]\n`, `  - id: r\n    host: "*.example.com"\n    path: /\n    scopes: ["r:s:x"]\n`), /also governed by route "r"/],
  ];
  for (const [name, text, re] of cases) {
    const problems = problemsOf({ 'p.yaml': text });
    t.equal(problems.length, 1, name);
    t.match(problems[0]?.message, re, name);
  }
  t.same(problemsOf({ 'p.yaml': pt(`  - host: a.example.com\n    port: 8443\n    scopes: ["u:s:x"]\n`, `  - id: r\n    host: a.example.com\n    path: /\n    scopes: ["r:s:x"]\n`) }), [], 'other port than the route');
});

t.test('the shipped policies compile', async (t) => {
  const { loadPolicies } = await import('../../src/config/load.js');
  const { compilePolicy } = await import('../../src/policy/compile.js');
  const p = compilePolicy(await loadPolicies([new URL('../../policies', import.meta.url).pathname]));
  t.same(p.routes.map((r) => r.id).sort(), ['account-read', 'billing-read', 'customer-read', 'customer-refund', 'customers-list']);
  t.same(p.connectors.map((c) => c.def.name), ['billing-api']);
});
